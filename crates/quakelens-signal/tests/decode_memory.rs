//! Decoding a record leaves nothing behind: a windower decodes thousands of records a second for
//! months. (The `mseed` crate's identifier accessors once leaked on every call.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use quakelens_signal::miniseed::{decode_record, split_records, Frame};

/// The system allocator, counting bytes live on the Rust heap.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::SeqCst);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::SeqCst);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn decoding_records_again_and_again_keeps_no_memory() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/real/BW.RJOB.2009-08-24.steim2.mseed"
    );
    let bytes = std::fs::read(path).unwrap();
    let records: Vec<&[u8]> = split_records(&bytes)
        .into_iter()
        .filter_map(|f| match f {
            Frame::Record { offset, len } => Some(&bytes[offset..offset + len]),
            Frame::Bad { .. } => None,
        })
        .collect();
    assert!(!records.is_empty());
    let decode_all = || {
        for r in &records {
            let decoded = decode_record(r).expect("RJOB decodes");
            assert!(!decoded.samples.is_empty());
        }
    };
    decode_all(); // first-use allocations (logging, lazily built tables) happen here
    let before = LIVE.load(Ordering::SeqCst);
    let rounds = 200;
    for _ in 0..rounds {
        decode_all();
    }
    let grown = LIVE.load(Ordering::SeqCst) - before;
    let decoded = rounds * records.len();
    assert!(
        grown < 4096,
        "{grown} bytes still live after decoding {decoded} records"
    );
}
