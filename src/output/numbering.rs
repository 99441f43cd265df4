//! A1111-style `NNNNN-SEED.png` names, claimed race-free between processes.
use std::io;
use std::path::{Path, PathBuf};

/// Names tried from `*number` on before giving up.
const MAX_TRIES: u32 = 100_000;

/// Claims `dir/NNNNN-SEED.png` for the first number from `*number` on that no file has yet:
/// the name is created empty with `O_CREAT|O_EXCL` (two processes never get one name; a
/// symlink there counts as taken), and the caller replaces it with the image (an atomic
/// write). `*number` moves past it.
pub fn claim_image_path(dir: &Path, number: &mut u32, seed: u64) -> io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    for _ in 0..MAX_TRIES {
        let path = dir.join(format!("{:05}-{seed}.png", *number));
        *number += 1;
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(_) => return Ok(path),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("{}: no free NNNNN-{seed}.png name", dir.display()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_claimers_never_get_one_name() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let d = d.clone();
                std::thread::spawn(move || {
                    // Every claimer starts from the same number, as processes that listed
                    // the folder at once would.
                    (0..25)
                        .map(|_| {
                            let mut n = 0;
                            claim_image_path(&d, &mut n, 42).unwrap()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<PathBuf> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        all.sort();
        let n = all.len();
        all.dedup();
        assert_eq!((n, all.len()), (100, 100));
        assert_eq!(all[0], d.join("00000-42.png"));
        assert_eq!(all[99], d.join("00099-42.png"));
    }

    #[test]
    fn a_symlink_in_the_way_is_skipped_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::os::unix::fs::symlink(&target, dir.path().join("00000-1.png")).unwrap();
        let mut n = 0;
        let p = claim_image_path(dir.path(), &mut n, 1).unwrap();
        assert_eq!(p, dir.path().join("00001-1.png"));
        assert!(!target.exists());
    }
}
