//! The process allocator: mimalloc, except that one allocation of
//! [`HUGE_ALLOCATION_BYTES`] or more is an anonymous mapping made with `MAP_NORESERVE`, backed
//! by memory only where it is touched.
//!
//! Why: request decoding (the `kafka-protocol` crate) reserves `Vec::with_capacity(count)` for
//! an array before reading its elements, with `count` taken from the wire. A 30-byte request
//! can announce 2^31 elements; the system allocator refuses the ~170 GB, and Rust aborts the
//! process on a failed allocation, so one hostile client would stop every shard. A
//! `MAP_NORESERVE` mapping of that size costs address space only: the decoder then fails on
//! the first element missing from the frame, and the mapping is returned untouched.
//!
//! No legitimate allocation of the broker comes near the threshold (requests are capped by
//! `socket.request.max.bytes`, disk reads by 16 MiB), so everything real goes to mimalloc.
//! Registered in `main.rs`, for the broker binary only.
//!
//! Why mimalloc rather than glibc's malloc: the batch cache holds many long-lived small
//! buffers (a 1 KiB produce request each, with 1,000 producers) interleaved with short-lived
//! request and response allocations. Under glibc the broker's RSS was 2.3x its live heap
//! (heaptrack: 226 MB live, RSS 452-517 MB after 12 s of `perf/workloads/producers-1000.toml`,
//! the rest fragmented arena pages); under mimalloc (and jemalloc) the same run measured 219 MB,
//! i.e. the live heap.

use std::alloc::{GlobalAlloc, Layout};

use mimalloc::MiMalloc as Backing;

/// Allocations at least this large are lazily backed mappings (see the module docs).
pub const HUGE_ALLOCATION_BYTES: usize = 1 << 30;
/// Alignment an anonymous mapping guarantees (the page size, at least).
const MAPPING_ALIGNMENT_BYTES: usize = 4096;

/// mimalloc with lazily backed huge allocations.
pub struct BrokerAllocator;

fn is_huge(size: usize, align: usize) -> bool {
    size >= HUGE_ALLOCATION_BYTES && align <= MAPPING_ALIGNMENT_BYTES
}

fn map(size: usize) -> *mut u8 {
    // SAFETY: a fresh private anonymous mapping; no existing memory is affected.
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

// SAFETY: every block is either the system allocator's or one whole mapping of exactly
// `layout.size()` bytes, told apart by `is_huge` of the same layout in every method.
unsafe impl GlobalAlloc for BrokerAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_huge(layout.size(), layout.align()) {
            map(layout.size())
        } else {
            // SAFETY: forwarded as received.
            unsafe { Backing.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_huge(layout.size(), layout.align()) {
            map(layout.size()) // anonymous mappings read as zeros
        } else {
            // SAFETY: forwarded as received.
            unsafe { Backing.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_huge(layout.size(), layout.align()) {
            // SAFETY: `ptr` is the start of a mapping of `layout.size()` bytes made by `map`.
            unsafe { libc::munmap(ptr.cast(), layout.size()) };
        } else {
            // SAFETY: forwarded as received.
            unsafe { Backing.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let align = layout.align();
        if !is_huge(layout.size(), align) && !is_huge(new_size, align) {
            // SAFETY: forwarded as received.
            return unsafe { Backing.realloc(ptr, layout, new_size) };
        }
        // SAFETY: the caller guarantees new_size, rounded up to align, fits an isize.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, align) };
        // SAFETY: a fresh block from this allocator; both blocks are valid for the copied
        // length, do not overlap, and the old one is freed with its own layout.
        unsafe {
            let new = self.alloc(new_layout);
            if !new.is_null() {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_absurd_allocation_succeeds_without_memory_and_is_usable() {
        let a = BrokerAllocator;
        let layout = Layout::from_size_align(200 << 30, 8).expect("layout");
        // SAFETY: test of the allocator itself; every pointer is used within its block.
        unsafe {
            let p = a.alloc(layout);
            assert!(!p.is_null(), "200 GiB of address space");
            *p = 7;
            *p.add(layout.size() - 1) = 9;
            assert_eq!((*p, *p.add(layout.size() - 1)), (7, 9));
            let q = a.realloc(p, layout, 4096);
            assert_eq!(
                *q, 7,
                "contents kept across the move to the system allocator"
            );
            a.dealloc(q, Layout::from_size_align(4096, 8).expect("layout"));
            let small = Layout::from_size_align(64, 8).expect("layout");
            let s = a.alloc_zeroed(small);
            assert_eq!(*s.add(63), 0);
            let big = a.realloc(s, small, HUGE_ALLOCATION_BYTES);
            assert_eq!(*big.add(63), 0);
            a.dealloc(
                big,
                Layout::from_size_align(HUGE_ALLOCATION_BYTES, 8).expect("layout"),
            );
        }
    }
}
