//! A connection's clocks: backpressure suspends body timeouts, one deadline
//! (the earliest) arms the connection's one timer, and what is due expires.

use tokio::time::Instant;

use super::{Conn, Phase};

impl Conn {
    /// Backpressure on or off; body timeouts restart when reading resumes.
    pub(super) fn set_reading(&mut self, reading: bool) {
        if reading && self.paused {
            let now = Instant::now();
            for s in &mut self.slots {
                if let Phase::Running { body, .. } = &mut s.phase {
                    body.last_input = now;
                }
            }
        }
        self.paused = !reading;
    }

    pub(super) fn next_deadline(&self, reading: bool) -> Option<Instant> {
        let t = self.ctx.clients.stdin_timeout;
        self.slots
            .iter()
            .filter_map(|s| s.deadline(t, reading))
            .chain(self.first_begin_by)
            .chain(self.partial_by)
            .min()
    }

    /// Acts on every timeout due at `now`; false: close the connection.
    pub(super) fn expire(&mut self, now: Instant, reading: bool) -> bool {
        if self.first_begin_by.is_some_and(|t| t <= now) {
            tracing::info!("closing a FastCGI client connection that sent no request in time");
            return false;
        }
        if self.partial_by.is_some_and(|t| t <= now) {
            tracing::info!("closing a FastCGI client connection that stopped mid-record");
            return false;
        }
        let t = self.ctx.clients.stdin_timeout;
        for idx in (0..self.slots.len()).rev() {
            if self.slots[idx].deadline(t, reading).is_none_or(|d| d > now) {
                continue;
            }
            let s = &mut self.slots[idx];
            match &mut s.phase {
                Phase::Params { .. } => {
                    tracing::warn!(request_id = s.id, "client too slow sending PARAMS");
                    self.answer(idx, 408);
                }
                Phase::AwaitStdin { .. } => {
                    tracing::warn!(request_id = s.id, "client never ended its empty STDIN");
                    self.answer(idx, 408);
                }
                Phase::Running { body, .. } => {
                    tracing::warn!(request_id = s.id, "client stopped sending the request body");
                    body.give_up(408);
                }
            }
        }
        true
    }
}
