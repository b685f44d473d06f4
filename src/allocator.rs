//! The global allocator: mimalloc, asked for plain blocks whenever a plain block is aligned
//! enough.
//!
//! mimalloc's aligned entry points (`mi_malloc_aligned` and friends) serve a request from the
//! size-class fast path only up to 1 KiB; a larger block whose size is not a power of two is
//! over-allocated, adjusted and its page marked as holding interior pointers, which makes
//! every later free on that page look the block's start up. mimalloc's size classes are whole
//! double words, so a plain block of 16 bytes or more is 16-byte aligned and a smaller one
//! word-aligned: requests that need no more than that (the rule Rust's own `System` allocator
//! applies to `malloc`) go to `mi_malloc`, `mi_zalloc` and `mi_realloc`; the rest keep the
//! aligned calls.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// Alignment of every plain block of at least this many bytes (`MI_MAX_ALIGN_SIZE`).
const PLAIN_ALIGN: usize = 16;

/// Whether a plain block of `size` bytes is aligned to `align`.
#[inline]
fn plain(align: usize, size: usize) -> bool {
    align <= PLAIN_ALIGN && align <= size
}

/// mimalloc as the global allocator (see the module documentation).
pub struct Mimalloc;

// SAFETY: every method forwards to mimalloc with the layout's size, and with its alignment
// whenever that exceeds what mimalloc's plain blocks guarantee; blocks are freed with `mi_free`,
// which takes blocks from either kind of call.
unsafe impl GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let (size, align) = (layout.size(), layout.align());
        if plain(align, size) {
            mi::mi_malloc(size).cast()
        } else {
            mi::mi_malloc_aligned(size, align).cast()
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let (size, align) = (layout.size(), layout.align());
        if plain(align, size) {
            mi::mi_zalloc(size).cast()
        } else {
            mi::mi_zalloc_aligned(size, align).cast()
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        mi::mi_free(ptr.cast::<c_void>());
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let ptr = ptr.cast::<c_void>();
        if plain(layout.align(), new_size) {
            mi::mi_realloc(ptr, new_size).cast()
        } else {
            mi::mi_realloc_aligned(ptr, new_size, layout.align()).cast()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_have_their_alignment_contents_and_sizes() {
        let a = Mimalloc;
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..2000 {
            let size = 1 + (next() % 9000) as usize;
            let align = 1usize << (next() % 13);
            let layout = Layout::from_size_align(size, align).unwrap();
            let zeroed = round % 3 == 0;
            // SAFETY: a non-zero size; the block is used within `size` bytes and freed once
            // with the layout it was allocated (or reallocated) with.
            unsafe {
                let p = if zeroed {
                    a.alloc_zeroed(layout)
                } else {
                    a.alloc(layout)
                };
                assert!(!p.is_null());
                assert_eq!(p as usize % align, 0, "{layout:?}");
                if zeroed {
                    assert!(std::slice::from_raw_parts(p, size).iter().all(|&b| b == 0));
                }
                for i in 0..size {
                    *p.add(i) = i as u8;
                }
                let new_size = 1 + (next() % 9000) as usize;
                let q = a.realloc(p, layout, new_size);
                assert!(!q.is_null());
                assert_eq!(q as usize % align, 0, "{layout:?} -> {new_size}");
                for i in 0..size.min(new_size) {
                    assert_eq!(*q.add(i), i as u8, "{layout:?} -> {new_size}, byte {i}");
                }
                *q.add(new_size - 1) = 0xa5;
                a.dealloc(q, Layout::from_size_align(new_size, align).unwrap());
            }
        }
    }
}
