//! rclip-style query arithmetic: `cat + ./ref.jpg - 0.5:blurry`. Each term is text or an
//! image file, with an optional `WEIGHT:` prefix; terms are added or subtracted after
//! normalisation, and the sum is normalised again.
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq)]
pub enum TermKind {
    Text(String),
    Image(PathBuf),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Term {
    pub kind: TermKind,
    /// Signed: negative for a subtracted term.
    pub weight: f32,
}

/// Splits the words of a query at standalone `+` and `-`. A term that names an existing
/// file, or starts with `./`, `../`, `/` or `~/`, is an image; anything else is text.
pub fn parse(words: &[String]) -> Result<Vec<Term>, String> {
    let mut terms = Vec::new();
    let mut sign = 1.0f32;
    let mut current: Vec<&str> = Vec::new();
    let mut flush = |current: &mut Vec<&str>, sign: f32| -> Result<(), String> {
        if current.is_empty() {
            return Err("a `+` or `-` needs a term on both sides".into());
        }
        let text = current.join(" ");
        current.clear();
        let (weight, body) = match text.split_once(':') {
            Some((w, rest)) if w.trim().parse::<f32>().is_ok() => (
                w.trim().parse::<f32>().unwrap_or(1.0),
                rest.trim().to_string(),
            ),
            _ => (1.0, text.trim().to_string()),
        };
        let body = body.trim_matches('"').to_string();
        if body.is_empty() {
            return Err(format!("empty term in the query ('{text}')"));
        }
        let looks_like_path = ["./", "../", "/", "~/"].iter().any(|p| body.starts_with(p));
        let kind = if looks_like_path || std::path::Path::new(&body).is_file() {
            TermKind::Image(crate::config::expand_home(&body))
        } else {
            TermKind::Text(body)
        };
        terms.push(Term {
            kind,
            weight: sign * weight,
        });
        Ok(())
    };
    for word in words.iter().flat_map(|w| w.split_whitespace()) {
        match word {
            "+" | "-" => {
                flush(&mut current, sign)?;
                sign = if word == "+" { 1.0 } else { -1.0 };
            }
            w => current.push(w),
        }
    }
    flush(&mut current, sign)?;
    Ok(terms)
}

fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// Σ weight · normalize(embedding), normalised.
pub fn combine(parts: &[(f32, Vec<f32>)]) -> Vec<f32> {
    let dim = parts.first().map_or(0, |(_, e)| e.len());
    let mut sum = vec![0f32; dim];
    for (w, e) in parts {
        let mut e = e.clone();
        normalize(&mut e);
        for (s, x) in sum.iter_mut().zip(e) {
            *s += w * x;
        }
    }
    normalize(&mut sum);
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        vec![s.to_string()]
    }

    #[test]
    fn parses_text_images_signs_and_weights() {
        let q = parse(&words("a red cat + ./ref.jpg - 0.5:blurry photo")).unwrap();
        assert_eq!(
            q,
            vec![
                Term {
                    kind: TermKind::Text("a red cat".into()),
                    weight: 1.0
                },
                Term {
                    kind: TermKind::Image("./ref.jpg".into()),
                    weight: 1.0
                },
                Term {
                    kind: TermKind::Text("blurry photo".into()),
                    weight: -0.5
                },
            ]
        );
        assert_eq!(
            parse(&words("\"cat\"")).unwrap()[0].kind,
            TermKind::Text("cat".into())
        );
        assert!(parse(&words("cat +")).is_err());
        assert!(parse(&words("- cat")).is_err());
        // A colon that is not a weight stays text.
        assert_eq!(
            parse(&words("time: 12:30")).unwrap()[0].kind,
            TermKind::Text("time: 12:30".into())
        );
    }

    #[test]
    fn combine_normalises_terms_then_the_sum() {
        let v = combine(&[(1.0, vec![3.0, 0.0]), (-0.5, vec![0.0, 10.0])]);
        let expect = [1.0 / 1.25f32.sqrt(), -0.5 / 1.25f32.sqrt()];
        assert!(
            (v[0] - expect[0]).abs() < 1e-6 && (v[1] - expect[1]).abs() < 1e-6,
            "{v:?}"
        );
    }
}
