//! The compare view's two images, decoded and resized off the UI thread.
use super::Msg;
use crate::state::{Action, AppState, GenStatus};
use crate::ui::PreviewImage;
use ratatui_image::picker::Picker;
use ratatui_image::thread::{ResizeRequest, ResizeResponse, ThreadProtocol};
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, Sender};

enum SlotMsg {
    Decoded {
        slot: usize,
        path: PathBuf,
        image: Result<image::DynamicImage, String>,
    },
    Resized {
        slot: usize,
        done: Result<ResizeResponse, String>,
    },
}

struct Slot {
    wanted: Option<PathBuf>,
    image: Option<PreviewImage>,
    resize_tx: Sender<ResizeRequest>,
}

/// The two images of the compare view, decoded and resized off the UI thread (each slot has
/// its own resize thread: a protocol's resize ids are its own).
pub struct CompareImages {
    slots: [Slot; 2],
    tx: Sender<SlotMsg>,
    rx: Receiver<SlotMsg>,
    wake: Sender<Msg>,
}

impl CompareImages {
    pub fn new(wake: Sender<Msg>) -> Self {
        let (tx, rx) = mpsc::channel();
        let slot = |i: usize| {
            let (resize_tx, resize_rx) = mpsc::channel::<ResizeRequest>();
            let tx: Sender<SlotMsg> = tx.clone();
            let wake = wake.clone();
            std::thread::spawn(move || {
                for req in resize_rx {
                    let done = req.resize_encode().map_err(|e| e.to_string());
                    if tx.send(SlotMsg::Resized { slot: i, done }).is_err() {
                        break;
                    }
                    let _ = wake.send(Msg::Action(Action::Tick));
                }
            });
            Slot {
                wanted: None,
                image: None,
                resize_tx,
            }
        };
        CompareImages {
            slots: [slot(0), slot(1)],
            tx,
            rx,
            wake,
        }
    }

    /// The images the compare view shows now: each generation's PNG, or its latest preview.
    fn wanted(state: &AppState) -> [Option<PathBuf>; 2] {
        let g = &state.generate;
        let path = |i: usize| {
            let h = g.history.get(i)?;
            match &h.status {
                GenStatus::Done(p) => Some(p.clone()),
                _ => h.preview.clone(),
            }
        };
        match g.compare {
            Some((a, b)) => [path(a), path(b)],
            None => [None, None],
        }
    }

    /// Starts decoding what the state wants and takes in what has finished; true when the
    /// screen must be redrawn.
    pub fn sync(&mut self, state: &AppState, picker: Option<&Picker>) -> bool {
        let mut changed = false;
        for (i, want) in Self::wanted(state).into_iter().enumerate() {
            let slot = &mut self.slots[i];
            if slot.wanted == want {
                continue;
            }
            changed = true;
            slot.wanted = want.clone();
            slot.image = None;
            if let (Some(path), Some(_)) = (want, picker) {
                let tx = self.tx.clone();
                let wake = self.wake.clone();
                std::thread::spawn(move || {
                    let image = image::open(&path).map_err(|e| format!("{}: {e}", path.display()));
                    if tx
                        .send(SlotMsg::Decoded {
                            slot: i,
                            path,
                            image,
                        })
                        .is_ok()
                    {
                        let _ = wake.send(Msg::Action(Action::Tick));
                    }
                });
            }
        }
        for msg in self.rx.try_iter() {
            match msg {
                SlotMsg::Decoded { slot, path, image } => {
                    let s = &mut self.slots[slot];
                    match (image, picker) {
                        (Ok(img), Some(picker)) if s.wanted.as_ref() == Some(&path) => {
                            let proto = picker.new_resize_protocol(img);
                            s.image = Some(PreviewImage {
                                path,
                                protocol: ThreadProtocol::new(s.resize_tx.clone(), Some(proto)),
                            });
                            changed = true;
                        }
                        (Err(e), _) => tracing::warn!("compare: {e}"),
                        _ => {}
                    }
                }
                SlotMsg::Resized { slot, done } => match (done, self.slots[slot].image.as_mut()) {
                    (Ok(done), Some(img)) => {
                        changed |= img.protocol.update_resized_protocol(done);
                    }
                    (Err(e), _) => tracing::warn!("compare: {e}"),
                    _ => {}
                },
            }
        }
        changed
    }

    /// The images for `ui::Ctx::compare`.
    pub fn images(&mut self) -> [Option<&mut PreviewImage>; 2] {
        let [a, b] = &mut self.slots;
        [a.image.as_mut(), b.image.as_mut()]
    }
}
