//! Which filesystem a folder is on (from /proc/mounts), to poll where inotify is blind.
use std::path::Path;

/// Filesystems where changes made by other machines raise no inotify events.
const NETWORK: &[&str] = &[
    "nfs",
    "nfs4",
    "cifs",
    "smb",
    "smb3",
    "smbfs",
    "9p",
    "afs",
    "ceph",
    "glusterfs",
    "davfs",
    "sshfs",
    "lustre",
    "gpfs",
    "ncpfs",
    "virtiofs",
];

/// Whether `fs` (as /proc/mounts names it) is a network or FUSE filesystem.
pub fn is_network(fs: &str) -> bool {
    NETWORK.contains(&fs) || fs == "fuse" || fs.starts_with("fuse.") || fs == "fuseblk"
}

/// The type of the filesystem holding `path` (the longest mount point that contains it).
pub fn fs_type(path: &Path) -> Option<String> {
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    fs_type_in(&mounts, path)
}

/// [`fs_type`] over a /proc/mounts text.
pub fn fs_type_in(mounts: &str, path: &Path) -> Option<String> {
    mounts
        .lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let (_dev, point, fs) = (f.next()?, f.next()?, f.next()?);
            // /proc/mounts escapes spaces and such as octal (\040).
            let point = unescape(point);
            path.starts_with(&point)
                .then(|| (point.len(), fs.to_string()))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, fs)| fs)
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_mount_point_wins() {
        let mounts = "overlay / overlay rw 0 0\n\
                      server:/export /mnt/nas nfs4 rw 0 0\n\
                      me@host:/ /mnt/my\\040box fuse.sshfs rw 0 0\n";
        assert_eq!(
            fs_type_in(mounts, Path::new("/home/a")).as_deref(),
            Some("overlay")
        );
        assert_eq!(
            fs_type_in(mounts, Path::new("/mnt/nas/in")).as_deref(),
            Some("nfs4")
        );
        assert_eq!(
            fs_type_in(mounts, Path::new("/mnt/my box/x")).as_deref(),
            Some("fuse.sshfs")
        );
        assert_eq!(
            fs_type_in(mounts, Path::new("/mnt/nasty")).as_deref(),
            Some("overlay")
        );
        assert!(is_network("nfs4") && is_network("fuse.sshfs") && is_network("cifs"));
        assert!(!is_network("ext4") && !is_network("overlay") && !is_network("tmpfs"));
    }
}
