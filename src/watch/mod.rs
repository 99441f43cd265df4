//! Watch folders: notify watcher, debounce, stable-size check, routing rules (in progress).
