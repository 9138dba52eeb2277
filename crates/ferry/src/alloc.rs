//! The process allocator of the `ferry` binary: the system's, except that very large
//! reservations get address space that is not backed until it is written.
//!
//! It serves the whole process, so it lives with `main`, which installs it. The Kafka
//! request fuzz target and the replay of its corpus (tests/kafka_fuzz_corpus.rs) compile
//! this file in too, so that they decode under the allocator `ferry serve` runs with.
//!
//! Wire decoders (the Kafka message codec among them) reserve room for as many
//! elements as a frame claims before decoding them. A hostile frame of a few bytes can
//! claim billions, and a failed allocation aborts the process. Reserving address space
//! without committing memory (`MAP_NORESERVE`) makes such a reservation harmless: the
//! decode then fails on the short frame, and only what was really written ever uses
//! memory. Real buffers never come near the threshold: requests are limited far below it.

use std::alloc::{GlobalAlloc, Layout, System};

/// Limits glibc's malloc to a few arenas. By default it keeps one per thread (up to
/// 8 × cores), each holding on to memory freed by that thread; Ferry's blocking I/O
/// threads would otherwise keep hundreds of MiB of freed buffers resident. Call once at
/// start, before other threads exist.
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only adjusts allocator tuning; called before other threads start.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Reservations at least this large are mapped lazily.
const LAZY_BYTES_MIN: usize = 1 << 30;
const PAGE_BYTES: usize = 4096;

pub struct FerryAlloc;

fn lazy(layout: &Layout) -> bool {
    layout.size() >= LAZY_BYTES_MIN && layout.align() <= PAGE_BYTES
}

unsafe fn map(size: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping with no address hint has no preconditions.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        std::ptr::null_mut()
    } else {
        p.cast()
    }
}

// SAFETY: every pointer handed out is either the system allocator's (and returned to
// it) or a fresh page-aligned mapping of at least the requested size (and unmapped with
// that size); mappings are zeroed by the kernel.
unsafe impl GlobalAlloc for FerryAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if lazy(&layout) {
            unsafe { map(layout.size()) }
        } else {
            unsafe { System.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if lazy(&layout) {
            unsafe { map(layout.size()) }
        } else {
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if lazy(&layout) {
            unsafe {
                libc::munmap(ptr.cast(), layout.size());
            }
        } else {
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return std::ptr::null_mut();
        };
        if !lazy(&layout) && !lazy(&new_layout) {
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reservation_of_hundreds_of_gigabytes_costs_nothing_until_written() {
        let layout = Layout::from_size_align(320 << 30, 8).unwrap();
        // SAFETY: the layout is non-zero; the pointer is written within it and freed once.
        unsafe {
            let p = FerryAlloc.alloc(layout);
            assert!(!p.is_null());
            p.write_bytes(7, 4096);
            assert_eq!(*p.add(4095), 7);
            let q = FerryAlloc.realloc(p, layout, 8192);
            assert_eq!(
                *q.add(100),
                7,
                "shrinking below the threshold keeps the bytes"
            );
            FerryAlloc.dealloc(q, Layout::from_size_align(8192, 8).unwrap());
        }
    }

    #[test]
    fn small_allocations_go_to_the_system_allocator() {
        let layout = Layout::from_size_align(64, 8).unwrap();
        // SAFETY: as above.
        unsafe {
            let p = FerryAlloc.alloc_zeroed(layout);
            assert_eq!(*p, 0);
            FerryAlloc.dealloc(p, layout);
        }
    }
}
