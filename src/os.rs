//! The one place with `unsafe`: small calls into the OS that no maintained crate wraps.

/// Niceness of the web's threads: under a crowd of clients, the OS gives acquisition, the
/// pipeline and the store writer the CPU first, and the web the rest.
pub const WEB_NICENESS: i32 = 10;

/// Lowers the calling thread's scheduling priority to `niceness` (Linux: niceness is per
/// thread; `who = 0` is the calling thread). Best effort: a failure leaves the priority as it
/// was and is reported once per thread at DEBUG.
#[allow(unsafe_code)]
pub fn lower_thread_priority(niceness: i32) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: setpriority takes plain integers and touches no memory of ours.
        let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, niceness) };
        if rc != 0 {
            tracing::debug!(
                error = %std::io::Error::last_os_error(),
                "could not lower the web thread's priority"
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = niceness;
}

/// Transparent huge pages off for the daemon (Linux's `madvise` mode lets mimalloc ask for
/// them): a 2 MiB page is zeroed whole on its first touch, which cost a sixth of the daemon's
/// CPU at full MQTT speed as the heap grew, and it inflates the RSS of a small gateway.
#[allow(unsafe_code)]
pub fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches no memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

#[cfg(not(feature = "mimalloc"))]
pub use glibc_tuning::{allocator_load, return_freed_memory_promptly};
#[cfg(feature = "mimalloc")]
pub use mimalloc_tuning::{allocator_load, return_freed_memory_promptly};

/// The global allocator is mimalloc (the optional feature `mimalloc`, src/main.rs).
#[cfg(feature = "mimalloc")]
mod mimalloc_tuning {
    /// mimalloc's `mi_option_purge_delay` in the numbering of the mimalloc v3 that
    /// libmimalloc-sys 0.1.49 builds (`mi_option_e` in its `mimalloc.h`).
    const MI_OPTION_PURGE_DELAY: libc::c_int = 15;
    /// mimalloc's own default purge delay, in milliseconds.
    const HEAVY_LOAD_PURGE_DELAY_MS: libc::c_long = 1_000;

    // The allocator's C library, linked into the binary as its global allocator
    // (src/main.rs); named here so that `mi_option_set` below also resolves in the library's
    // own test binaries.
    extern crate mimalloc as _;

    /// Whether [`return_freed_memory_promptly`] took over mimalloc's purge delay.
    static PURGE_TUNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    /// Whether the purge delay is currently the heavy-load one.
    static HEAVY_LOAD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

    #[allow(unsafe_code)]
    fn set_purge_delay(ms: libc::c_long) {
        unsafe extern "C" {
            fn mi_option_set(option: libc::c_int, value: libc::c_long);
        }
        // SAFETY: mi_option_set stores an integer in mimalloc's option table; it may be
        // called at any time, from any thread.
        unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, ms) }
    }

    /// Memory the allocator no longer uses goes back to the OS at once (mimalloc's purge
    /// delay 0 instead of 1 s), until [`allocator_load`] reports heavy load. For the daemon
    /// only; an operator's `MIMALLOC_PURGE_DELAY` (milliseconds) wins over this and over
    /// `allocator_load`.
    pub fn return_freed_memory_promptly() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        set_purge_delay(0);
        PURGE_TUNED.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Tells the allocator whether the daemon is under heavy load (the store writer, once a
    /// second, from the records it committed). Light: freed pages are purged at once, which
    /// keeps the RSS of a gateway a few MB lower. Heavy: mimalloc's default delay of 1 s, so
    /// that pages a commit frees are reused by the next one instead of being purged and
    /// faulted in again (a purge delay of 0 cost about 0.5 µs of daemon CPU per message at
    /// full MQTT speed, a seventh). A no-op unless [`return_freed_memory_promptly`] took over
    /// the delay.
    pub fn allocator_load(heavy: bool) {
        use std::sync::atomic::Ordering::Relaxed;
        if PURGE_TUNED.load(Relaxed) && HEAVY_LOAD.swap(heavy, Relaxed) != heavy {
            set_purge_delay(if heavy { HEAVY_LOAD_PURGE_DELAY_MS } else { 0 });
        }
    }
}

/// The global allocator is the C library's malloc (built without the feature `mimalloc`).
#[cfg(not(feature = "mimalloc"))]
mod glibc_tuning {
    /// Arenas glibc may create: by default 8 per core, each keeping its own freed memory. One
    /// arena held a 1,000-sensor gateway 1.4 MiB lower than two, and the MQTT bench ran as
    /// fast (small allocations come from each thread's cache without the arena's lock).
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    const ARENA_MAX: libc::c_int = 1;
    /// Free memory at the top of the heap above this goes back to the OS (glibc's default
    /// grows up to 32 MiB with the largest block freed).
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    const TRIM_THRESHOLD: libc::c_int = 128 * 1024;

    /// At most [`ARENA_MAX`] malloc arenas and a fixed trim threshold, unless the operator set
    /// glibc's own `MALLOC_ARENA_MAX` or `MALLOC_TRIM_THRESHOLD_`, which then win.
    #[allow(unsafe_code)]
    pub fn return_freed_memory_promptly() {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        {
            if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
                // SAFETY: mallopt sets an integer in glibc's malloc parameters; called
                // before the runtime starts its threads.
                unsafe { libc::mallopt(libc::M_ARENA_MAX, ARENA_MAX) };
            }
            if std::env::var_os("MALLOC_TRIM_THRESHOLD_").is_none() {
                // SAFETY: as above.
                unsafe { libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) };
            }
        }
    }

    /// Nothing to tune under load with glibc's malloc.
    pub fn allocator_load(_heavy: bool) {}
}
