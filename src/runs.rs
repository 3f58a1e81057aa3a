//! Start-up work split into runs of consecutive items, done on up to a given number of threads
//! at once (no more than the machine's cores): a large catalog's YAML pieces and its intents.

/// `work` done on each run of consecutive `items`, the runs on up to `max_threads` threads
/// (this one included), the results in the items' order; the first failure in that order. A
/// thread that cannot be started, or that panics, leaves its run to this one.
pub(crate) fn in_runs<T, R, E>(
    items: &[T],
    max_threads: usize,
    name: &str,
    work: impl Fn(&[T]) -> Result<R, E> + Sync,
) -> Result<Vec<R>, E>
where
    T: Sync,
    R: Send,
    E: Send,
{
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let run = items.len().div_ceil(cores.min(max_threads).max(1)).max(1);
    let work = &work;
    std::thread::scope(|scope| {
        let mut runs = items.chunks(run);
        let first = runs.next().unwrap_or_default();
        let others: Vec<_> = runs
            .map(|r| {
                let thread = std::thread::Builder::new()
                    .name(name.into())
                    .spawn_scoped(scope, move || work(r));
                (r, thread.ok())
            })
            .collect();
        let mut done = vec![work(first)?];
        for (r, thread) in others {
            done.push(match thread.map(|t| t.join()) {
                Some(Ok(result)) => result,
                _ => work(r),
            }?);
        }
        Ok(done)
    })
}

#[cfg(test)]
mod tests {
    use super::in_runs;

    #[test]
    fn runs_come_back_in_order_with_the_first_failure() {
        let items: Vec<u32> = (0..9).collect();
        let sums = in_runs(&items, 4, "t", |r| Ok::<_, u32>(r.to_vec())).unwrap();
        assert_eq!(sums.concat(), items);
        let fail = |r: &[u32]| match r.iter().find(|&&x| x == 5 || x == 8) {
            Some(&x) => Err(x),
            None => Ok(()),
        };
        assert_eq!(in_runs(&items, 4, "t", fail), Err(5));
        assert_eq!(in_runs(&items, 1, "t", fail), Err(5));
        assert_eq!(
            in_runs::<u32, (), ()>(&[], 4, "t", |_| Ok(())),
            Ok(vec![()])
        );
    }
}
