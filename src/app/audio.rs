//! Segment playback through cpal on its own thread; the UI only sends play and stop.
use super::Msg;
use crate::media::audio::decode_to_16k_mono;
use crate::state::{Action, Event};
use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::Duration;

pub enum PlayCmd {
    Play {
        path: PathBuf,
        start: f64,
        end: f64,
    },
    /// (start, end) spans of one file, one after another (a speaker's turns).
    PlayTurns {
        path: PathBuf,
        turns: Vec<(f64, f64)>,
    },
    Stop,
}

fn send(tx: &Sender<Msg>, ev: Event) {
    let _ = tx.send(Msg::Action(Action::Event(ev)));
}

/// Starts the player thread.
pub fn spawn(events: Sender<Msg>) -> Sender<PlayCmd> {
    let (tx, rx) = mpsc::channel::<PlayCmd>();
    std::thread::spawn(move || {
        let mut cache: Option<(PathBuf, Arc<Vec<f32>>)> = None;
        let mut next = rx.recv().ok();
        while let Some(cmd) = next.take() {
            let (path, spans) = match cmd {
                PlayCmd::Play { path, start, end } => (path, vec![(start, end)]),
                PlayCmd::PlayTurns { path, turns } => (path, turns),
                PlayCmd::Stop => {
                    next = rx.recv().ok();
                    continue;
                }
            };
            let samples = match &cache {
                Some((p, s)) if *p == path => Arc::clone(s),
                _ => match decode_to_16k_mono(&path) {
                    Ok(s) => {
                        let s = Arc::new(s);
                        cache = Some((path.clone(), Arc::clone(&s)));
                        s
                    }
                    Err(e) => {
                        send(&events, Event::Error(e.to_string()));
                        next = rx.recv().ok();
                        continue;
                    }
                },
            };
            let n = samples.len();
            let ranges: Vec<(usize, usize)> = spans
                .iter()
                .map(|&(start, end)| {
                    let from = ((start.max(0.0) * 16_000.0) as usize).min(n);
                    (from, ((end.max(start) * 16_000.0) as usize).min(n))
                })
                .filter(|(a, b)| b > a)
                .collect();
            if ranges.is_empty() {
                send(&events, Event::PlaybackStopped);
                next = rx.recv().ok();
                continue;
            }
            match play(samples, ranges) {
                Err(e) => {
                    send(&events, Event::AudioUnavailable(e));
                    next = rx.recv().ok();
                }
                Ok((stream, pos, done)) => {
                    // Report the position until the segment ends or another command comes.
                    loop {
                        match rx.recv_timeout(Duration::from_millis(100)) {
                            Ok(cmd) => {
                                next = Some(cmd);
                                break;
                            }
                            Err(RecvTimeoutError::Disconnected) => return,
                            Err(RecvTimeoutError::Timeout) => {}
                        }
                        let seconds = pos.load(Ordering::Relaxed) as f64 / 16_000.0;
                        send(
                            &events,
                            Event::PlaybackPosition {
                                path: path.clone(),
                                seconds,
                            },
                        );
                        if done.load(Ordering::Relaxed) {
                            break;
                        }
                    }
                    drop(stream);
                    if next.is_none() {
                        send(&events, Event::PlaybackStopped);
                        next = rx.recv().ok();
                    } else if matches!(next, Some(PlayCmd::Stop)) {
                        send(&events, Event::PlaybackStopped);
                    }
                }
            }
        }
    });
    tx
}

type Playing = (cpal::Stream, Arc<AtomicUsize>, Arc<AtomicBool>);

/// Plays the `ranges` of `samples` (16 kHz mono) one after another on the default output
/// device, resampled linearly to the device rate (a preview of speech, not mastering). The
/// position reported is the sample index in `samples`.
fn play(samples: Arc<Vec<f32>>, ranges: Vec<(usize, usize)>) -> Result<Playing, String> {
    let Some(&(from, mut to)) = ranges.first() else {
        return Err("nothing to play".into());
    };
    let host = cpal::default_host();
    let device = host
        .default_output_device()
        .ok_or_else(|| format!("no audio output device ({} host)", host.id().name()))?;
    let config = device
        .default_output_config()
        .map_err(|e| format!("the audio device is unusable: {e}"))?;
    if config.sample_format() != cpal::SampleFormat::F32 {
        return Err(format!(
            "the audio device wants {:?} samples; only f32 output is supported",
            config.sample_format()
        ));
    }
    let config = config.config();
    let channels = config.channels.max(1) as usize;
    let step = 16_000.0 / config.sample_rate.max(1) as f64;
    let pos = Arc::new(AtomicUsize::new(from));
    let done = Arc::new(AtomicBool::new(false));
    let (p, d) = (Arc::clone(&pos), Arc::clone(&done));
    let mut t = from as f64;
    let mut range = 0;
    let stream = device
        .build_output_stream::<f32, _, _>(
            config,
            move |out: &mut [f32], _| {
                for frame in out.chunks_mut(channels) {
                    let mut i = t as usize;
                    if i + 1 >= to {
                        if let Some(&(a, b)) = ranges.get(range + 1) {
                            range += 1;
                            (t, to, i) = (a as f64, b, a);
                        }
                    }
                    let v = if i + 1 < to {
                        let frac = (t - i as f64) as f32;
                        samples[i] * (1.0 - frac) + samples[i + 1] * frac
                    } else {
                        d.store(true, Ordering::Relaxed);
                        0.0
                    };
                    frame.fill(v);
                    t += step;
                }
                p.store(t as usize, Ordering::Relaxed);
            },
            |e| tracing::warn!("audio output: {e}"),
            None,
        )
        .map_err(|e| format!("cannot open the audio output: {e}"))?;
    stream
        .play()
        .map_err(|e| format!("cannot start the audio output: {e}"))?;
    Ok((stream, pos, done))
}
