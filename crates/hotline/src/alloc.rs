//! The process's memory allocator: mimalloc for the many small, short-lived
//! allocations of request handling, the system allocator (glibc, `mmap`ed)
//! for large ones.
//!
//! Why mimalloc: requests are parsed on one runtime thread, written by the
//! store's writer thread and answered by its syncer, so most blocks are
//! freed on another thread than the one that allocated them. glibc's arenas
//! pay for that with locks and consolidation (~13% of server CPU in the
//! closed-loop benchmark); mimalloc frees them into per-page lists. Measured
//! in BENCHMARKS.md.
//!
//! Why large blocks go elsewhere: argon2 takes 7 MiB per password hash.
//! Served by mimalloc, such a block stays resident in its arena after the
//! hash; served by glibc above its mmap threshold, it is unmapped on free.
//! The peak resident memory of a registration burst is what this bounds.
//!
//! Routing by size is sound because `GlobalAlloc` hands `dealloc` and
//! `realloc` the same layout the block was allocated with.

use std::alloc::{GlobalAlloc, Layout, System};

use mimalloc::MiMalloc;

/// Blocks of at least this size come from the system allocator. It is also
/// glibc's mmap threshold (set in [`return_large_allocations_to_the_system`]),
/// so each such block is its own mapping.
const LARGE: usize = 256 * 1024;

pub struct Allocator;

// SAFETY: every block is freed or resized by the allocator that made it:
// both paths pick the allocator from `layout.size()`, which `GlobalAlloc`'s
// contract keeps equal to the size the block was allocated with; `realloc`
// across the boundary moves the block to the other allocator by hand.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= LARGE {
            unsafe { System.alloc(layout) }
        } else {
            unsafe { MiMalloc.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= LARGE {
            unsafe { System.alloc_zeroed(layout) }
        } else {
            unsafe { MiMalloc.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if layout.size() >= LARGE {
            unsafe { System.dealloc(ptr, layout) }
        } else {
            unsafe { MiMalloc.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let was_large = layout.size() >= LARGE;
        if was_large == (new_size >= LARGE) {
            return if was_large {
                unsafe { System.realloc(ptr, layout, new_size) }
            } else {
                unsafe { MiMalloc.realloc(ptr, layout, new_size) }
            };
        }
        // SAFETY: the caller guarantees `new_size`, rounded up to the
        // alignment, does not overflow `isize`.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
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

/// Large allocations come from `mmap` and go back to the system when freed.
/// Without this, glibc raises its mmap threshold after the first such free
/// and serves later ones from per-thread arenas that keep the memory: each
/// registration or login on a new thread then held on to 7 MiB, and the
/// server's resident memory grew to ~130 MB under a registration burst.
pub fn return_large_allocations_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only adjusts allocator parameters; it runs first in
    // main, before other threads exist.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, LARGE as libc::c_int);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A block that grows past [`LARGE`] and shrinks back moves between the
    /// two allocators with its bytes, and each frees what it made.
    #[test]
    fn realloc_across_the_large_boundary_keeps_the_bytes() {
        let a = Allocator;
        let small = Layout::from_size_align(1000, 16).unwrap();
        unsafe {
            let p = a.alloc(small);
            assert!(!p.is_null());
            for i in 0..small.size() {
                *p.add(i) = (i % 251) as u8;
            }
            let big = a.realloc(p, small, 3 * LARGE);
            assert!(!big.is_null());
            assert_eq!(big as usize % 16, 0, "alignment kept");
            for i in 0..small.size() {
                assert_eq!(*big.add(i), (i % 251) as u8);
            }
            *big.add(3 * LARGE - 1) = 7;
            let big_layout = Layout::from_size_align(3 * LARGE, 16).unwrap();
            let back = a.realloc(big, big_layout, 500);
            assert!(!back.is_null());
            for i in 0..500 {
                assert_eq!(*back.add(i), (i % 251) as u8);
            }
            a.dealloc(back, Layout::from_size_align(500, 16).unwrap());
            let zeroed = a.alloc_zeroed(big_layout);
            assert!((0..big_layout.size()).all(|i| *zeroed.add(i) == 0));
            a.dealloc(zeroed, big_layout);
        }
    }
}
