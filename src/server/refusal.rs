//! "Say why in the broker log": one INFO line for each request the broker refuses for a reason
//! an operator should see without the client's logs (a topic config it does not accept, an API
//! or version it does not speak, a feature not built yet), naming the client and the reason.
//!
//! A misbehaving client can send thousands of such requests a second, so the lines are limited
//! per shard to [`REFUSAL_LOG_LINES_PER_SECOND`]; the first line after a limited second says how
//! many were left out.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// Most refusal lines one shard writes per second.
pub const REFUSAL_LOG_LINES_PER_SECOND: u32 = 10;

thread_local! {
    /// This shard's current one-second window: its start, lines written, lines left out.
    static WINDOW: Cell<(Option<Instant>, u32, u64)> = const { Cell::new((None, 0, 0)) };
}

/// Logs one refused request at INFO (`api` is the Kafka API's name, `reason` the message the
/// client was given), unless this shard already wrote its share of such lines this second.
pub fn log_refusal(client_id: &str, api: &str, reason: &dyn std::fmt::Display) {
    let now = Instant::now();
    let (start, written, left_out) = WINDOW.with(Cell::get);
    let (start, written, left_out) = match start {
        Some(s) if now.duration_since(s) < Duration::from_secs(1) => (s, written, left_out),
        _ => (now, 0, left_out),
    };
    if written >= REFUSAL_LOG_LINES_PER_SECOND {
        WINDOW.with(|w| w.set((Some(start), written, left_out + 1)));
        return;
    }
    if left_out > 0 {
        tracing::info!(
            client_id,
            api,
            left_out,
            "request refused: {reason} (and {left_out} more refusals not logged)"
        );
    } else {
        tracing::info!(client_id, api, "request refused: {reason}");
    }
    WINDOW.with(|w| w.set((Some(start), written + 1, 0)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_limited_per_second_and_the_left_out_counted() {
        for i in 0..(REFUSAL_LOG_LINES_PER_SECOND + 5) {
            log_refusal("c", "Test", &i);
        }
        let (_, written, left_out) = WINDOW.with(Cell::get);
        assert_eq!(written, REFUSAL_LOG_LINES_PER_SECOND);
        assert_eq!(left_out, 5);
    }
}
