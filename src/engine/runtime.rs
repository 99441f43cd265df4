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
        let candidates: Vec<PathBuf> = [
            std::env::var_os("ATELIER_LIBTORCH_CUDA").map(PathBuf::from),
            (!LIBTORCH_LIB.is_empty())
                .then(|| PathBuf::from(LIBTORCH_LIB).join("libtorch_cuda.so")),
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
            let count = tch::Cuda::device_count() as usize;
            if index >= count {
                return Err(DeviceError::NoSuchGpu { index, count });
            }
            Ok(tch::Device::Cuda(index))
        }
    }
}

/// A GPU as `doctor` and the status bar show it.
#[derive(Debug, Clone)]
pub struct GpuInfo {
    pub index: usize,
    pub name: String,
    pub total_bytes: u64,
    pub free_bytes: Option<u64>,
}

type CuInit = unsafe extern "C" fn(u32) -> i32;
type CuDeviceGetCount = unsafe extern "C" fn(*mut i32) -> i32;
type CuDeviceGet = unsafe extern "C" fn(*mut i32, i32) -> i32;
type CuDeviceGetName = unsafe extern "C" fn(*mut std::ffi::c_char, i32, i32) -> i32;
type CuDeviceTotalMem = unsafe extern "C" fn(*mut usize, i32) -> i32;
type CudaSetDevice = unsafe extern "C" fn(i32) -> i32;
type CudaMemGetInfo = unsafe extern "C" fn(*mut usize, *mut usize) -> i32;

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

/// Lists the GPUs through the driver API (names and memory, which tch does not expose).
pub fn gpus() -> Vec<GpuInfo> {
    let Ok(lib) = driver() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    // SAFETY: each symbol is called with the documented C signature and valid pointers.
    unsafe {
        let (Ok(init), Ok(count), Ok(get), Ok(name), Ok(total)) = (
            lib.get::<CuInit>(b"cuInit\0"),
            lib.get::<CuDeviceGetCount>(b"cuDeviceGetCount\0"),
            lib.get::<CuDeviceGet>(b"cuDeviceGet\0"),
            lib.get::<CuDeviceGetName>(b"cuDeviceGetName\0"),
            lib.get::<CuDeviceTotalMem>(b"cuDeviceTotalMem_v2\0"),
        ) else {
            return out;
        };
        if init(0) != 0 {
            return out;
        }
        let mut n = 0i32;
        if count(&mut n) != 0 {
            return out;
        }
        let cudart = libloading::Library::new("libcudart.so.13").ok();
        for i in 0..n {
            let mut dev = 0i32;
            if get(&mut dev, i) != 0 {
                continue;
            }
            let mut buf = [0 as std::ffi::c_char; 256];
            let gpu_name = if name(buf.as_mut_ptr(), buf.len() as i32, dev) == 0 {
                std::ffi::CStr::from_ptr(buf.as_ptr())
                    .to_string_lossy()
                    .into_owned()
            } else {
                "unknown GPU".into()
            };
            let mut bytes = 0usize;
            total(&mut bytes, dev);
            let free_bytes = cudart.as_ref().and_then(|rt| {
                let set = rt.get::<CudaSetDevice>(b"cudaSetDevice\0").ok()?;
                let info = rt.get::<CudaMemGetInfo>(b"cudaMemGetInfo\0").ok()?;
                let (mut free, mut tot) = (0usize, 0usize);
                (set(i) == 0 && info(&mut free, &mut tot) == 0).then_some(free as u64)
            });
            out.push(GpuInfo {
                index: i as usize,
                name: gpu_name,
                total_bytes: bytes as u64,
                free_bytes,
            });
        }
    }
    out
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

    pub fn loaded(&self) -> Vec<String> {
        let mut names: Vec<String> = self.models.keys().cloned().collect();
        names.sort();
        names
    }

    pub fn evict(&mut self, key: &str) {
        self.models.remove(key);
    }
}

type Job = Box<dyn FnOnce(&mut ModelCache) + Send>;

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
                let mut cache = ModelCache {
                    device,
                    models: HashMap::new(),
                };
                while let Ok(job) = rx.recv() {
                    // A bug in one job must not take the models down with it: its reply
                    // channel closes, and the caller reports the job as failed.
                    let run = std::panic::AssertUnwindSafe(|| job(&mut cache));
                    if std::panic::catch_unwind(run).is_err() {
                        tracing::error!("a model job panicked; the model thread goes on");
                    }
                }
            })?;
        Ok(DeviceThread { tx, device })
    }

    /// Queues `job`; false when the thread has gone.
    pub fn submit(&self, job: impl FnOnce(&mut ModelCache) + Send + 'static) -> bool {
        self.tx.send(Box::new(job)).is_ok()
    }

    /// Runs `job` on the model thread and waits for its result.
    pub fn run<R: Send + 'static>(
        &self,
        job: impl FnOnce(&mut ModelCache) -> R + Send + 'static,
    ) -> Option<R> {
        let (tx, rx) = mpsc::channel();
        if !self.submit(move |cache| {
            let _ = tx.send(job(cache));
        }) {
            return None;
        }
        rx.recv().ok()
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
