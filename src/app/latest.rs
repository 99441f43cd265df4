//! "Latest request wins" (after gitui's `AsyncSingleJob`): one worker thread runs requests
//! one at a time, and a request made while one runs replaces the one waiting, so scrolling
//! through a thousand images decodes the one the cursor stops on, not a thousand at once.
use std::sync::{Arc, Condvar, Mutex};

struct Slot<R> {
    waiting: Option<R>,
    closed: bool,
}

/// The handle; dropping it lets the worker finish its current request and stop.
pub struct Latest<R: Send + 'static> {
    shared: Arc<(Mutex<Slot<R>>, Condvar)>,
}

impl<R: Send + 'static> Latest<R> {
    /// Starts the worker; `work` runs each request that is still the newest when it starts.
    pub fn spawn(name: &str, mut work: impl FnMut(R) + Send + 'static) -> std::io::Result<Self> {
        let shared = Arc::new((
            Mutex::new(Slot {
                waiting: None,
                closed: false,
            }),
            Condvar::new(),
        ));
        let theirs = Arc::clone(&shared);
        std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let (lock, cv) = &*theirs;
                loop {
                    let request = {
                        let mut slot = lock.lock().unwrap_or_else(|e| e.into_inner());
                        loop {
                            if let Some(r) = slot.waiting.take() {
                                break r;
                            }
                            if slot.closed {
                                return;
                            }
                            slot = cv.wait(slot).unwrap_or_else(|e| e.into_inner());
                        }
                    };
                    work(request);
                }
            })?;
        Ok(Latest { shared })
    }

    /// Asks for `request`, replacing any request still waiting (it never runs).
    pub fn request(&self, request: R) {
        let (lock, cv) = &*self.shared;
        lock.lock().unwrap_or_else(|e| e.into_inner()).waiting = Some(request);
        cv.notify_one();
    }
}

impl<R: Send + 'static> Drop for Latest<R> {
    fn drop(&mut self) {
        let (lock, cv) = &*self.shared;
        lock.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
        cv.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn requests_made_while_one_runs_collapse_to_the_newest() {
        let (started_tx, started) = mpsc::channel();
        let (release_tx, release) = mpsc::channel::<()>();
        let (done_tx, done) = mpsc::channel();
        let latest = Latest::spawn("latest-test", move |n: u32| {
            started_tx.send(n).unwrap();
            if n == 1 {
                // Held until the test has made its other requests.
                release.recv().unwrap();
            }
            done_tx.send(n).unwrap();
        })
        .unwrap();
        latest.request(1);
        assert_eq!(started.recv_timeout(Duration::from_secs(10)), Ok(1));
        for n in 2..=5 {
            latest.request(n);
        }
        release_tx.send(()).unwrap();
        let ran: Vec<u32> = (0..2)
            .map(|_| done.recv_timeout(Duration::from_secs(10)).unwrap())
            .collect();
        assert_eq!(ran, [1, 5], "2, 3 and 4 were replaced before they started");
        assert!(done.recv_timeout(Duration::from_millis(200)).is_err());
        // Idle again: the next request runs.
        latest.request(6);
        assert_eq!(done.recv_timeout(Duration::from_secs(10)), Ok(6));
    }

    #[test]
    fn dropping_the_handle_stops_the_worker() {
        let (done_tx, done) = mpsc::channel::<u32>();
        let latest = Latest::spawn("latest-test", move |n| done_tx.send(n).unwrap()).unwrap();
        latest.request(7);
        assert_eq!(done.recv_timeout(Duration::from_secs(10)), Ok(7));
        drop(latest);
        // The worker ends and drops its sender: the channel disconnects.
        assert_eq!(
            done.recv_timeout(Duration::from_secs(10)),
            Err(mpsc::RecvTimeoutError::Disconnected)
        );
    }
}
