//! libtorch start-up (CUDA backend loading), device selection and the model thread.
use crate::config::DeviceChoice;
use std::any::Any;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, OnceLock};

/// The libtorch folder and version this binary was built against (see build.rs).
pub const LIBTORCH_LIB: &str = env!("ATELIER_LIBTORCH_LIB");
pub const LIBTORCH_VERSION: &str = env!("ATELIER_LIBTORCH_VERSION");

/// The libtorch this process runs on: the one the dynamic loader found at start (the rpath,
/// or `LD_LIBRARY_PATH` as the installed launcher sets it from `ATELIER_TORCH` or python3).
#[derive(Debug, Clone)]
pub struct Libtorch {
    /// The folder holding libtorch_cpu.so.
    pub lib_dir: PathBuf,
    /// e.g. "2.11.0+cu130"; the build's version when the folder does not say.
    pub version: String,
}

impl Libtorch {
    /// Major.minor, the part TorchScript archives and tch's bindings depend on.
    pub fn series(&self) -> &str {
        series(&self.version)
    }

    /// How the loader came to this folder, for `doctor`.
    pub fn found_by(&self) -> String {
        if let Ok(via) = std::env::var("ATELIER_TORCH_VIA") {
            return via;
        }
        let built = std::fs::canonicalize(LIBTORCH_LIB).ok();
        if built.as_deref() == Some(self.lib_dir.as_path()) {
            "the rpath (the libtorch this binary was built against)".into()
        } else {
            "LD_LIBRARY_PATH".into()
        }
    }
}

/// "2.11.0+cu130" -> "2.11".
pub fn series(version: &str) -> &str {
    let v = version.split('+').next().unwrap_or(version);
    match v.match_indices('.').nth(1) {
        Some((i, _)) => &v[..i],
        None => v,
    }
}

/// The version a torch folder (the parent of lib/) declares: version.py of a torch package,
/// build-version of a libtorch zip.
pub fn torch_folder_version(root: &std::path::Path) -> Option<String> {
    if let Ok(text) = std::fs::read_to_string(root.join("version.py")) {
        return text
            .lines()
            .find_map(|l| l.strip_prefix("__version__ = "))
            .map(|v| v.trim().trim_matches(|c| c == '\'' || c == '"').to_string());
    }
    std::fs::read_to_string(root.join("build-version"))
        .ok()
        .map(|v| v.trim().to_string())
}

/// The libtorch in use, read once from the process's own mappings.
pub fn libtorch() -> &'static Libtorch {
    static LIBTORCH: OnceLock<Libtorch> = OnceLock::new();
    LIBTORCH.get_or_init(|| {
        let mapped = std::fs::read_to_string("/proc/self/maps")
            .ok()
            .and_then(|maps| {
                maps.lines()
                    .filter_map(|l| l.split_whitespace().nth(5))
                    .find(|p| p.ends_with("/libtorch_cpu.so"))
                    .map(PathBuf::from)
            })
            .and_then(|so| std::fs::canonicalize(so).ok())
            .and_then(|so| so.parent().map(PathBuf::from));
        let lib_dir = mapped.unwrap_or_else(|| PathBuf::from(LIBTORCH_LIB));
        let version = lib_dir
            .parent()
            .and_then(torch_folder_version)
            .unwrap_or_else(|| LIBTORCH_VERSION.to_string());
        Libtorch { lib_dir, version }
    })
}

/// Whether libtorch's CUDA backend could be loaded, and why not.
#[derive(Debug, Clone)]
pub enum CudaBackend {
    Loaded(PathBuf),
    Unavailable(String),
}

static CUDA_BACKEND: OnceLock<CudaBackend> = OnceLock::new();

/// Loads `libtorch_cuda.so` once. The binary does not pull it in by itself, so without this
/// libtorch never registers its CUDA backend, even on a GPU server. Fails soft: CPU then.
pub fn init() -> &'static CudaBackend {
    CUDA_BACKEND.get_or_init(|| {
        configure_jit();
        configure_cudnn();
        let candidates: Vec<PathBuf> = [
            std::env::var_os("ATELIER_LIBTORCH_CUDA").map(PathBuf::from),
            // The one beside the libtorch_cpu.so in use: never mix two libtorch builds.
            Some(libtorch().lib_dir.join("libtorch_cuda.so")),
            Some(PathBuf::from("libtorch_cuda.so")),
        ]
        .into_iter()
        .flatten()
        .collect();
        let mut last_error = String::from("libtorch_cuda.so was not found");
        for path in candidates {
            if path.is_absolute() && !path.exists() {
                last_error = format!("{} does not exist (a CPU-only libtorch)", path.display());
                continue;
            }
            // SAFETY: loading libtorch's own CUDA library runs its static initialisers, which
            // register the CUDA backend; it stays loaded for the life of the process.
            let lib = unsafe {
                libloading::os::unix::Library::open(
                    Some(&path),
                    libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_GLOBAL,
                )
            };
            match lib {
                Ok(lib) => {
                    std::mem::forget(lib);
                    return CudaBackend::Loaded(path);
                }
                Err(e) => last_error = format!("cannot load {}: {e}", path.display()),
            }
        }
        CudaBackend::Unavailable(last_error)
    })
}

/// `ATELIER_CUDNN=0` turns cuDNN off (convolutions then run on CUDA's own kernels, with no
/// TF32): for checking whether a CUDA float32 difference comes from cuDNN.
fn configure_cudnn() {
    if std::env::var("ATELIER_CUDNN").as_deref() == Ok("0") {
        tch::Cuda::set_user_enabled_cudnn(false);
    }
}

/// The profiling executor re-specialises a traced graph for new input shapes; the decoder's
/// KV cache grows every step, so it would recompile constantly. Run graphs as traced.
fn configure_jit() {
    match std::env::var("ATELIER_JIT").as_deref() {
        Ok("profile") => {}
        Ok("simple") => tch::jit::set_profiling_mode(false),
        _ => {
            tch::jit::set_profiling_mode(false);
            tch::jit::set_graph_executor_optimize(false);
        }
    }
}

/// Why CUDA cannot be used here, or None when it can.
pub fn cuda_unavailable_reason() -> Option<String> {
    match init() {
        CudaBackend::Unavailable(why) => Some(why.clone()),
        CudaBackend::Loaded(_) if tch::Cuda::device_count() > 0 => None,
        CudaBackend::Loaded(_) => Some(match driver_problem() {
            Some(why) => format!("no CUDA GPU found ({why})"),
            None => "no CUDA GPU found".to_string(),
        }),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("CUDA was asked for ({choice}) but is not available: {reason}")]
    NoCuda {
        choice: DeviceChoice,
        reason: String,
    },
    #[error("CUDA device {index} does not exist: this machine has {count} GPU(s)")]
    NoSuchGpu { index: usize, count: usize },
}

/// The GPU `pin_gpu` left visible: (the index asked for, its `CUDA_VISIBLE_DEVICES` entry).
static PINNED_GPU: OnceLock<(usize, String)> = OnceLock::new();

/// `--device cuda:N`: makes GPU N the only one this process can see, before anything starts
/// CUDA, so nothing creates a context or allocates memory on the other GPUs. libtorch then
/// numbers it cuda:0 (`resolve_device` maps N to it). N counts the GPUs an existing
/// `CUDA_VISIBLE_DEVICES` leaves, else every GPU NVML lists. Call once, early in `main`.
pub fn pin_gpu(choice: DeviceChoice) -> Result<(), DeviceError> {
    let DeviceChoice::Cuda(index) = choice else {
        return Ok(());
    };
    let entries: Vec<String> = match std::env::var("CUDA_VISIBLE_DEVICES") {
        Ok(list) => list
            .split(',')
            .map(|e| e.trim().to_string())
            .filter(|e| !e.is_empty())
            .collect(),
        // NVML counts the GPUs without starting CUDA (cuInit would fix the visible set).
        Err(_) => match nvml_wrapper::Nvml::init().and_then(|n| n.device_count()) {
            Ok(count) => (0..count).map(|i| i.to_string()).collect(),
            // No driver: resolve_device reports why CUDA is unavailable.
            Err(_) => return Ok(()),
        },
    };
    let Some(entry) = entries.get(index) else {
        return Err(DeviceError::NoSuchGpu {
            index,
            count: entries.len(),
        });
    };
    // Racy only if another thread reads the environment: main calls this before starting any.
    std::env::set_var("CUDA_VISIBLE_DEVICES", entry);
    let _ = PINNED_GPU.set((index, entry.clone()));
    Ok(())
}

/// Resolves `auto|cpu|cuda[:N]` to a tch device. `auto` takes cuda:0 when present.
pub fn resolve_device(choice: DeviceChoice) -> Result<tch::Device, DeviceError> {
    match choice {
        DeviceChoice::Cpu => Ok(tch::Device::Cpu),
        DeviceChoice::Auto => Ok(match cuda_unavailable_reason() {
            None => tch::Device::Cuda(0),
            Some(_) => tch::Device::Cpu,
        }),
        DeviceChoice::Cuda(index) => {
            if let Some(reason) = cuda_unavailable_reason() {
                return Err(DeviceError::NoCuda { choice, reason });
            }
            // After pin_gpu the asked-for GPU is the only one libtorch sees.
            let index = match PINNED_GPU.get() {
                Some((pinned, _)) if *pinned == index => 0,
                _ => index,
            };
            let count = tch::Cuda::device_count() as usize;
            if index >= count {
                return Err(DeviceError::NoSuchGpu { index, count });
            }
            Ok(tch::Device::Cuda(index))
        }
    }
}

/// A GPU as `doctor` shows it.
#[derive(Debug, Clone)]
pub struct GpuInfo {
    pub index: usize,
    pub name: String,
    pub total_bytes: u64,
    pub free_bytes: Option<u64>,
}

/// The NVIDIA driver and the GPUs it has, as NVML reports them.
#[derive(Debug, Clone, Default)]
pub struct GpuReport {
    pub driver_version: Option<String>,
    /// The newest CUDA the driver supports, e.g. "13.0".
    pub cuda_driver_version: Option<String>,
    pub gpus: Vec<GpuInfo>,
}

type CuInit = unsafe extern "C" fn(u32) -> i32;

fn driver() -> Result<libloading::Library, String> {
    // SAFETY: the NVIDIA driver library has no initialisers with preconditions.
    unsafe { libloading::Library::new("libcuda.so.1") }
        .map_err(|_| "the NVIDIA driver (libcuda.so.1) is not installed".to_string())
}

fn driver_problem() -> Option<String> {
    let lib = match driver() {
        Ok(lib) => lib,
        Err(e) => return Some(e),
    };
    // SAFETY: cuInit has this C signature in every CUDA driver.
    let rc = unsafe {
        match lib.get::<CuInit>(b"cuInit\0") {
            Ok(f) => f(0),
            Err(e) => return Some(format!("libcuda.so.1 has no cuInit: {e}")),
        }
    };
    (rc != 0).then(|| format!("cuInit failed with CUDA error {rc}"))
}

/// The driver and every GPU on the machine (NVML numbering; `CUDA_VISIBLE_DEVICES` does not
/// apply). NVML reads names and memory without creating a CUDA context on any GPU.
pub fn gpus() -> Result<GpuReport, String> {
    let nvml = nvml_wrapper::Nvml::init().map_err(|e| match e {
        nvml_wrapper::error::NvmlError::LibloadingError(_) => {
            "no NVIDIA driver (libnvidia-ml.so.1 is not installed)".to_string()
        }
        e => format!("NVML: {e}"),
    })?;
    let count = nvml.device_count().map_err(|e| format!("NVML: {e}"))?;
    let cuda = nvml
        .sys_cuda_driver_version()
        .ok()
        .map(|v| format!("{}.{}", v / 1000, (v % 1000) / 10));
    let gpus = (0..count)
        .filter_map(|i| {
            let d = nvml.device_by_index(i).ok()?;
            let memory = d.memory_info().ok();
            Some(GpuInfo {
                index: i as usize,
                name: d.name().unwrap_or_else(|_| "unknown GPU".into()),
                total_bytes: memory.as_ref().map_or(0, |m| m.total),
                free_bytes: memory.map(|m| m.free),
            })
        })
        .collect();
    Ok(GpuReport {
        driver_version: nvml.sys_driver_version().ok(),
        cuda_driver_version: cuda,
        gpus,
    })
}

/// The NVML device behind CUDA device `index`: CUDA numbers only the visible devices, NVML
/// all of them, so `CUDA_VISIBLE_DEVICES` (indices or UUIDs) maps one onto the other.
pub fn nvml_device(nvml: &nvml_wrapper::Nvml, index: usize) -> Option<nvml_wrapper::Device<'_>> {
    let visible = std::env::var("CUDA_VISIBLE_DEVICES").ok();
    let entry = visible
        .as_deref()
        .and_then(|v| v.split(',').nth(index).map(|s| s.trim().to_string()));
    match entry {
        Some(e) if e.starts_with("GPU-") || e.starts_with("MIG-") => nvml.device_by_uuid(e),
        Some(e) => nvml.device_by_index(e.parse().ok()?),
        None => nvml.device_by_index(index as u32),
    }
    .ok()
}

/// GPU memory this process holds on CUDA device `index` (context, caching allocator and
/// all), as nvidia-smi shows it; the whole GPU's used memory where NVML does not list the
/// process (a container's PID namespace).
pub fn gpu_memory_in_use(index: usize) -> Option<u64> {
    static NVML: OnceLock<Option<nvml_wrapper::Nvml>> = OnceLock::new();
    let nvml = NVML
        .get_or_init(|| nvml_wrapper::Nvml::init().ok())
        .as_ref()?;
    let device = nvml_device(nvml, index)?;
    let pid = std::process::id();
    let own = device.running_compute_processes().ok().and_then(|ps| {
        ps.into_iter()
            .find(|p| p.pid == pid)
            .and_then(|p| match p.used_gpu_memory {
                nvml_wrapper::enums::device::UsedGpuMemory::Used(bytes) => Some(bytes),
                nvml_wrapper::enums::device::UsedGpuMemory::Unavailable => None,
            })
    });
    own.or_else(|| device.memory_info().ok().map(|m| m.used))
}

/// Set by the UI or a signal handler; checked by engines between windows and steps.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst)
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// What a job on the model thread sees: the device and the models loaded so far, kept warm
/// between jobs (keyed by model name and role).
pub struct ModelCache {
    pub device: tch::Device,
    models: HashMap<String, Box<dyn Any>>,
    /// Entries whose weights a job is changing in place (LoRA fuse): still here when the job
    /// ends (an error or a panic before [`ModelCache::end_patch`]), they may be half-patched
    /// and are evicted.
    patching: std::collections::HashSet<String>,
}

impl ModelCache {
    /// Returns the cached value for `key`, building it on first use.
    pub fn get_or_try_insert<T: 'static, E>(
        &mut self,
        key: &str,
        build: impl FnOnce(tch::Device) -> Result<T, E>,
    ) -> Result<&mut T, E> {
        if !self.models.get(key).is_some_and(|m| m.is::<T>()) {
            let value = build(self.device)?;
            self.models.insert(key.to_string(), Box::new(value));
        }
        // The entry was checked or inserted with type T just above.
        Ok(self
            .models
            .get_mut(key)
            .and_then(|m| m.downcast_mut::<T>())
            .expect("model cache entry has the type it was inserted with"))
    }

    /// The cached value for `key`, if it is there with type T.
    pub fn get_mut<T: 'static>(&mut self, key: &str) -> Option<&mut T> {
        self.models.get_mut(key).and_then(|m| m.downcast_mut::<T>())
    }

    pub fn loaded(&self) -> Vec<String> {
        let mut names: Vec<String> = self.models.keys().cloned().collect();
        names.sort();
        names
    }

    pub fn evict(&mut self, key: &str) {
        self.models.remove(key);
    }

    /// Marks `key`'s weights as being changed in place until [`ModelCache::end_patch`].
    pub fn begin_patch(&mut self, key: &str) {
        self.patching.insert(key.to_string());
    }

    /// The in-place change of `key`'s weights is complete.
    pub fn end_patch(&mut self, key: &str) {
        self.patching.remove(key);
    }

    /// After a job: evicts every entry whose patch did not complete (its weights may be
    /// half-patched), so the next job loads it afresh.
    fn evict_half_patched(&mut self) {
        for key in std::mem::take(&mut self.patching) {
            tracing::warn!("{key}: evicted (a job ended while changing its weights)");
            self.models.remove(&key);
        }
    }

    fn new(device: tch::Device) -> Self {
        ModelCache {
            device,
            models: HashMap::new(),
            patching: Default::default(),
        }
    }

    /// Runs one job; a panic in it is logged and the thread's models stay, except any the
    /// job left half-patched.
    fn run_job(&mut self, job: Job) {
        let run = std::panic::AssertUnwindSafe(|| job(self));
        if std::panic::catch_unwind(run).is_err() {
            tracing::error!("a model job panicked; the model thread goes on");
        }
        self.evict_half_patched();
    }
}

type Job = Box<dyn FnOnce(&mut ModelCache) + Send>;

/// Why a job on the model thread gave no result: the one error at that boundary, by cause
/// (the queue turns it into a [`RunError`](crate::jobs::RunError) of the same kind).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelJobError {
    /// The request cannot succeed as given (a broken model, a bad input, a bad setting).
    #[error("{0}")]
    Permanent(String),
    /// It may succeed later (the model thread stopped, a model was evicted meanwhile).
    #[error("{0}")]
    Transient(String),
    /// Its cancel token was cancelled.
    #[error("cancelled")]
    Cancelled,
    /// It panicked; the panic's message is kept.
    #[error("the model job panicked: {0}")]
    Panicked(String),
}

impl ModelJobError {
    pub fn stopped() -> Self {
        ModelJobError::Transient("the model thread has stopped".to_string())
    }
}

/// A setup step's error (a message): the request as given cannot run.
impl From<String> for ModelJobError {
    fn from(message: String) -> Self {
        ModelJobError::Permanent(message)
    }
}

/// The message of a caught panic (`panic!("…")` payloads are `&str` or `String`).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(no message)".to_string())
}

/// One OS thread per device that owns every TorchScript module. Model work never runs on
/// tokio workers or the UI thread; callers send closures and get replies on their own channels.
#[derive(Clone)]
pub struct DeviceThread {
    tx: mpsc::Sender<Job>,
    pub device: tch::Device,
}

impl DeviceThread {
    /// The process's one model thread for `device`, started on first use. Everything in one
    /// process that runs models (the TUI's queue, CLIP and generate workers) shares it, so a
    /// device holds each model once.
    pub fn shared(device: tch::Device) -> std::io::Result<Self> {
        static THREADS: std::sync::OnceLock<std::sync::Mutex<Vec<DeviceThread>>> =
            std::sync::OnceLock::new();
        let mut threads = THREADS
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(t) = threads.iter().find(|t| t.device == device) {
            return Ok(t.clone());
        }
        let t = DeviceThread::spawn(device)?;
        threads.push(t.clone());
        Ok(t)
    }

    pub fn spawn(device: tch::Device) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name(format!("atelier-model-{device:?}"))
            .spawn(move || {
                let _guard = tch::no_grad_guard();
                let mut cache = ModelCache::new(device);
                // A bug in one job must not take the models down with it: its reply
                // channel closes, and the caller reports the job as failed.
                while let Ok(job) = rx.recv() {
                    cache.run_job(job);
                }
            })?;
        Ok(DeviceThread { tx, device })
    }

    /// Queues `job`; false when the thread has gone.
    pub fn submit(&self, job: impl FnOnce(&mut ModelCache) + Send + 'static) -> bool {
        self.tx.send(Box::new(job)).is_ok()
    }

    /// Runs `job` on the model thread and waits for its result. A panic in it comes back as
    /// [`ModelJobError::Panicked`] with its message; a thread that has gone as a transient
    /// error.
    pub fn run<R: Send + 'static>(
        &self,
        job: impl FnOnce(&mut ModelCache) -> R + Send + 'static,
    ) -> Result<R, ModelJobError> {
        let (tx, rx) = mpsc::channel();
        let submitted = self.submit(move |cache| {
            let run = std::panic::AssertUnwindSafe(|| job(cache));
            let result = std::panic::catch_unwind(run).map_err(|p| {
                let message = panic_message(p.as_ref());
                tracing::error!("a model job panicked: {message}; the model thread goes on");
                ModelJobError::Panicked(message)
            });
            let _ = tx.send(result);
        });
        if !submitted {
            return Err(ModelJobError::stopped());
        }
        rx.recv().unwrap_or_else(|_| Err(ModelJobError::stopped()))
    }
}

/// Keeps freed memory in the process for reuse instead of handing it back to the kernel.
///
/// glibc serves big blocks with fresh `mmap`s and trims the heap as soon as its top is free,
/// so the tensors a decoder step allocates and frees (logits, the grown KV cache) come back
/// as new zeroed pages every step: a perf profile of beam-5 Whisper on the CPU spent 13% of
/// its time in page faults. With no mmap'd blocks and no trimming the pages are reused:
/// `atelier transcribe` with 1 thread went from 19.4-20.0 s to 17.0 s (sys 3.3 s -> 1.1 s)
/// on the 216 s benchmark file, for about 150 MB more peak RSS. Does nothing off glibc.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// Hands freed heap memory back to the OS (glibc's `malloc_trim`), after a job in a
/// long-lived process: [`keep_freed_memory`] keeps it during a job for speed, and without this a
/// daemon would hold its largest job's peak for good. Does nothing off glibc.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages to the kernel; it is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Sets libtorch's intra-op CPU threads.
pub fn set_threads(n: i32) {
    if n > 0 {
        tch::set_num_threads(n);
    }
}

/// libtorch's intra-op CPU threads.
pub fn cpu_threads() -> i32 {
    tch::get_num_threads()
}

/// GPUs libtorch can use (0 without the CUDA backend).
pub fn cuda_device_count() -> i64 {
    tch::Cuda::device_count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache_with(keys: &[&str]) -> ModelCache {
        let mut cache = ModelCache::new(tch::Device::Cpu);
        for k in keys {
            cache
                .get_or_try_insert(k, |_| Ok::<_, ()>(1u32))
                .expect("inserted");
        }
        cache
    }

    #[test]
    fn a_job_that_panics_while_patching_evicts_only_that_model() {
        let mut cache = cache_with(&["sd", "whisper"]);
        cache.run_job(Box::new(|c: &mut ModelCache| {
            c.begin_patch("sd");
            panic!("fuse failed half-way");
        }));
        assert_eq!(cache.loaded(), vec!["whisper".to_string()]);
    }

    #[test]
    fn a_job_that_errs_while_patching_evicts_and_a_finished_patch_keeps() {
        let mut cache = cache_with(&["sd"]);
        cache.run_job(Box::new(|c: &mut ModelCache| {
            c.begin_patch("sd");
            c.end_patch("sd");
        }));
        assert_eq!(
            cache.loaded(),
            vec!["sd".to_string()],
            "a complete patch keeps the model"
        );
        cache.run_job(Box::new(|c: &mut ModelCache| {
            c.begin_patch("sd");
            // an early return with an error: no end_patch
        }));
        assert!(cache.loaded().is_empty(), "a half-patched model is evicted");
    }

    #[test]
    fn run_keeps_a_panics_message_and_the_thread_goes_on() {
        let thread = DeviceThread::spawn(tch::Device::Cpu).unwrap();
        let panicked = thread.run(|_| -> u32 { panic!("decoder bug at frame {}", 7) });
        assert_eq!(
            panicked,
            Err(ModelJobError::Panicked("decoder bug at frame 7".into()))
        );
        assert_eq!(
            thread.run(|_| "static message").map(str::to_string),
            Ok("static message".to_string())
        );
        let literal = thread.run(|_| -> u8 { panic!("a literal") });
        assert_eq!(literal, Err(ModelJobError::Panicked("a literal".into())));
        assert_eq!(thread.run(|_| 41 + 1), Ok(42), "the thread still runs jobs");
    }

    #[test]
    fn a_panic_without_a_patch_keeps_the_models() {
        let mut cache = cache_with(&["sd"]);
        cache.run_job(Box::new(|_: &mut ModelCache| panic!("a bug")));
        assert_eq!(cache.loaded(), vec!["sd".to_string()]);
    }
}
