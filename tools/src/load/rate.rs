//! Open-loop send schedule: at a fixed rate, message `i` is *intended* at `start + i / rate`,
//! whatever happened to message `i - 1`. Latency is measured from that intended time, so a
//! stalled broker shows up as latency instead of silently lowering the send rate (no
//! coordinated omission, as in wrk2 and the OpenMessaging Benchmark's publish delay).

/// The intended send times of one producer.
#[derive(Clone, Debug)]
pub struct RateSchedule {
    start_ns: u64,
    interval_ns: f64,
    next_index: u64,
}

impl RateSchedule {
    /// A schedule of `rate` msg/s (> 0) whose first message is intended at `start_ns`.
    pub fn new(start_ns: u64, rate: f64) -> Self {
        assert!(rate > 0.0 && rate.is_finite(), "rate must be positive");
        Self {
            start_ns,
            interval_ns: 1e9 / rate,
            next_index: 0,
        }
    }

    /// Intended time of message `i`; computed from the start so rounding never drifts.
    #[inline]
    pub fn intended_ns(&self, i: u64) -> u64 {
        self.start_ns + (i as f64 * self.interval_ns) as u64
    }

    /// The intended time of the next message not yet sent.
    #[inline]
    pub fn next_intended_ns(&self) -> u64 {
        self.intended_ns(self.next_index)
    }

    /// If the next message is due at `now_ns`, takes it and returns its intended time.
    #[inline]
    pub fn take_due(&mut self, now_ns: u64) -> Option<u64> {
        let t = self.next_intended_ns();
        if t <= now_ns {
            self.next_index += 1;
            Some(t)
        } else {
            None
        }
    }

    /// Messages taken so far.
    pub fn taken(&self) -> u64 {
        self.next_index
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_count_over_one_second() {
        let mut s = RateSchedule::new(1_000, 1000.0);
        let mut n = 0;
        while s.take_due(1_000 + 999_999_999).is_some() {
            n += 1;
        }
        assert_eq!(n, 1000, "messages 0..=999 are due within the first second");
        assert_eq!(s.next_intended_ns(), 1_000 + 1_000_000_000);
    }

    #[test]
    fn fractional_rates_do_not_drift() {
        let mut s = RateSchedule::new(0, 3.0);
        let mut last = 0;
        while let Some(t) = s.take_due(10_000_000_000) {
            last = t;
        }
        assert_eq!(s.taken(), 31, "t = 0, 1/3, ..., 10 s");
        assert!((last as i64 - 10_000_000_000).abs() <= 1, "{last}");
    }

    #[test]
    fn late_sender_catches_up_with_old_intended_times() {
        let mut s = RateSchedule::new(0, 100.0);
        // The sender wakes 1 s late: all 101 messages are due, with their original times.
        let due: Vec<u64> = std::iter::from_fn(|| s.take_due(1_000_000_000)).collect();
        assert_eq!(due.len(), 101);
        assert_eq!(due[0], 0);
        assert_eq!(due[50], 500_000_000);
    }

    #[test]
    fn nothing_due_before_start() {
        let mut s = RateSchedule::new(5_000, 10.0);
        assert_eq!(s.take_due(4_999), None);
        assert_eq!(s.take_due(5_000), Some(5_000));
    }
}
