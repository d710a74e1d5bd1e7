//! Independent items of work spread over the machine's cores.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use tract_core::internal::*;

/// `work(i)` for every `i < count`, on as many threads as there are cores (at most `count`),
/// the results in order of `i`; `progress(i, count)` as item `i` starts. The first error in
/// order of `i` is returned.
pub fn in_parallel<T: Send>(
    count: usize,
    work: impl Fn(usize) -> TractResult<T> + Sync,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> TractResult<Vec<T>> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(count)
        .max(1);
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<TractResult<T>>>> =
        Mutex::new((0..count).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                progress(i, count);
                let result = work(i);
                if let Ok(mut slots) = results.lock() {
                    slots[i] = Some(result);
                }
            });
        }
    });
    let slots = results
        .into_inner()
        .map_err(|_| format_err!("a worker thread panicked"))?;
    slots
        .into_iter()
        .map(|slot| slot.unwrap_or_else(|| Err(format_err!("a worker thread panicked"))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_in_order_and_the_first_error_wins() {
        let squares = in_parallel(50, |i| Ok(i * i), &|_, _| ()).unwrap();
        assert_eq!(squares, (0..50).map(|i| i * i).collect::<Vec<_>>());
        let failed = in_parallel(
            10,
            |i| if i % 4 == 3 { bail!("item {i}") } else { Ok(i) },
            &|_, _| (),
        );
        assert_eq!(failed.unwrap_err().to_string(), "item 3");
    }
}
