//! Agglomerative clustering of speaker embeddings (kodama, average linkage on cosine
//! distance), cut at a given speaker count or, when none is given, at a distance threshold
//! and then held inside `--min-speakers`/`--max-speakers`.
use kodama::{linkage, Method};

/// How many speakers to find: `exact` (`--speakers N`), else estimated within `min..=max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpeakerCount {
    pub exact: Option<usize>,
    pub min: usize,
    pub max: usize,
}

impl Default for SpeakerCount {
    fn default() -> Self {
        SpeakerCount {
            exact: None,
            min: 1,
            max: 20,
        }
    }
}

/// Average-linkage cosine distance under which two groups of windows are the same speaker.
/// Set from the measurements in docs/whisper.md ("Speakers").
pub const DISTANCE_THRESHOLD: f32 = 0.32;
/// An estimated cluster with fewer windows than this is folded into the nearest other one
/// (a cough, a laugh, a window that straddles two voices), unless that goes under `min`.
pub const MIN_CLUSTER_WINDOWS: usize = 3;

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Cosine distance between unit vectors, clamped to [0, 2] against rounding.
fn distance(a: &[f32], b: &[f32]) -> f32 {
    (1.0 - dot(a, b)).clamp(0.0, 2.0)
}

/// A cluster label (0, 1, …, in order of first appearance) for each unit-length embedding.
pub fn cluster(embeddings: &[Vec<f32>], count: SpeakerCount, threshold: f32) -> Vec<usize> {
    let n = embeddings.len();
    if n <= 1 {
        return vec![0; n];
    }
    let mut condensed = Vec::with_capacity(n * (n - 1) / 2);
    for i in 0..n {
        for j in i + 1..n {
            condensed.push(distance(&embeddings[i], &embeddings[j]));
        }
    }
    let dendrogram = linkage(&mut condensed, n, Method::Average);
    let steps = dendrogram.steps();
    let (min, max) = (count.min.max(1).min(n), count.max.max(1).min(n));
    let k = match count.exact {
        Some(k) => k.clamp(1, n),
        None => {
            let merged = steps
                .iter()
                .take_while(|s| s.dissimilarity <= threshold)
                .count();
            (n - merged).clamp(min, max.max(min))
        }
    };
    // Union-find over the first n - k merges (kodama's steps are in merge order).
    let mut parent: Vec<usize> = (0..2 * n - 1).collect();
    fn root(parent: &mut [usize], mut x: usize) -> usize {
        while parent[x] != x {
            parent[x] = parent[parent[x]];
            x = parent[x];
        }
        x
    }
    for (i, step) in steps.iter().take(n - k).enumerate() {
        let new = n + i;
        let a = root(&mut parent, step.cluster1);
        let b = root(&mut parent, step.cluster2);
        parent[a] = new;
        parent[b] = new;
    }
    let mut labels: Vec<usize> = (0..n).map(|i| root(&mut parent, i)).collect();
    if count.exact.is_none() {
        labels = fold_small(embeddings, &labels, min);
    }
    first_appearance(&labels)
}

/// Moves the windows of clusters smaller than [`MIN_CLUSTER_WINDOWS`] to the nearest
/// remaining centroid, keeping at least `min` clusters.
fn fold_small(embeddings: &[Vec<f32>], labels: &[usize], min: usize) -> Vec<usize> {
    let mut sizes = std::collections::BTreeMap::<usize, usize>::new();
    for &l in labels {
        *sizes.entry(l).or_default() += 1;
    }
    let mut by_size: Vec<(usize, usize)> = sizes.iter().map(|(&l, &s)| (s, l)).collect();
    by_size.sort_by(|a, b| b.cmp(a));
    let keep: Vec<usize> = by_size
        .iter()
        .enumerate()
        .filter(|(rank, (size, _))| *size >= MIN_CLUSTER_WINDOWS || *rank < min)
        .map(|(_, &(_, l))| l)
        .collect();
    if keep.len() == by_size.len() || keep.is_empty() {
        return labels.to_vec();
    }
    let dim = embeddings[0].len();
    let centroids: Vec<(usize, Vec<f32>)> = keep
        .iter()
        .map(|&l| {
            let mut c = vec![0.0f32; dim];
            for (e, _) in embeddings.iter().zip(labels).filter(|(_, &x)| x == l) {
                for (ci, ei) in c.iter_mut().zip(e) {
                    *ci += ei;
                }
            }
            let norm = dot(&c, &c).sqrt().max(f32::MIN_POSITIVE);
            c.iter_mut().for_each(|x| *x /= norm);
            (l, c)
        })
        .collect();
    labels
        .iter()
        .zip(embeddings)
        .map(|(&l, e)| {
            if keep.contains(&l) {
                return l;
            }
            centroids
                .iter()
                .map(|(cl, c)| (distance(e, c), *cl))
                .min_by(|a, b| a.0.total_cmp(&b.0))
                .map_or(l, |(_, cl)| cl)
        })
        .collect()
}

/// Renumbers labels 0, 1, … in order of first appearance.
pub fn first_appearance(labels: &[usize]) -> Vec<usize> {
    let mut seen: Vec<usize> = Vec::new();
    labels
        .iter()
        .map(|l| match seen.iter().position(|s| s == l) {
            Some(i) => i,
            None => {
                seen.push(*l);
                seen.len() - 1
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A unit vector near axis `axis` of 8, nudged by `jitter` along the next axis.
    fn near(axis: usize, jitter: f32) -> Vec<f32> {
        let mut v = vec![0.0f32; 8];
        v[axis] = 1.0;
        v[(axis + 1) % 8] = jitter;
        let n = dot(&v, &v).sqrt();
        v.iter().map(|x| x / n).collect()
    }

    fn voices(pattern: &[usize]) -> Vec<Vec<f32>> {
        pattern
            .iter()
            .enumerate()
            .map(|(i, &a)| near(a, 0.05 * (i % 3) as f32))
            .collect()
    }

    #[test]
    fn estimates_the_count_and_labels_in_order_of_appearance() {
        let e = voices(&[3, 3, 3, 5, 5, 5, 3, 3, 1, 1, 1, 1]);
        let labels = cluster(&e, SpeakerCount::default(), DISTANCE_THRESHOLD);
        assert_eq!(labels, vec![0, 0, 0, 1, 1, 1, 0, 0, 2, 2, 2, 2]);
    }

    #[test]
    fn one_voice_is_one_speaker() {
        let e = voices(&[2; 9]);
        assert_eq!(
            cluster(&e, SpeakerCount::default(), DISTANCE_THRESHOLD),
            vec![0; 9]
        );
    }

    #[test]
    fn exact_count_and_bounds_override_the_estimate() {
        let e = voices(&[0, 0, 0, 4, 4, 4, 6, 6, 6]);
        let exact = SpeakerCount {
            exact: Some(2),
            ..SpeakerCount::default()
        };
        let labels = cluster(&e, exact, DISTANCE_THRESHOLD);
        assert_eq!(labels.iter().max(), Some(&1));
        let at_most_two = SpeakerCount {
            max: 2,
            ..SpeakerCount::default()
        };
        assert_eq!(
            cluster(&e, at_most_two, DISTANCE_THRESHOLD).iter().max(),
            Some(&1)
        );
        let one_voice = voices(&[2; 6]);
        let at_least_two = SpeakerCount {
            min: 2,
            ..SpeakerCount::default()
        };
        assert_eq!(
            cluster(&one_voice, at_least_two, DISTANCE_THRESHOLD)
                .iter()
                .max(),
            Some(&1)
        );
    }

    #[test]
    fn a_stray_window_joins_the_nearest_speaker() {
        let mut e = voices(&[0, 0, 0, 0, 4, 4, 4, 4]);
        // halfway between axis 4 and 5, nearer 4: its own cluster by the threshold, folded
        let mut stray = vec![0.0f32; 8];
        stray[4] = 0.8;
        stray[5] = 0.6;
        e.insert(2, stray);
        let labels = cluster(&e, SpeakerCount::default(), DISTANCE_THRESHOLD);
        assert_eq!(labels, vec![0, 0, 1, 0, 0, 1, 1, 1, 1]);
    }

    #[test]
    fn empty_and_single() {
        assert!(cluster(&[], SpeakerCount::default(), DISTANCE_THRESHOLD).is_empty());
        assert_eq!(
            cluster(&[near(0, 0.0)], SpeakerCount::default(), DISTANCE_THRESHOLD),
            vec![0]
        );
    }
}
