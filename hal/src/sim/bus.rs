//! A simulated RS485 bus with a wire-accurate virtual clock.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::clock::SimClock;
use super::device::{SimDevice, SimReply};
use super::fault::{ActiveFault, Fault};
use crate::{
    Clock, DirectionControl, HalError, LineSettings, ReplyEnd, ReplyInfo, Rs485Bus, Rs485Timing,
};

/// Identifies a device attached to a [`SimBus`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeviceId(usize);

/// Counters a simulated bus keeps, for tests to assert on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimBusStats {
    /// Frames sent by the host (requests and broadcasts).
    pub frames_sent: u64,
    /// Bytes sent by the host, preambles included.
    pub bytes_sent: u64,
    /// Replies delivered to the host, whole or partial.
    pub replies: u64,
    /// Reply bytes the host received (stray bytes not counted).
    pub bytes_received: u64,
    /// Exchanges where two or more devices answered at once.
    pub collisions: u64,
    /// Reply bytes that arrived after the host stopped listening and were discarded.
    pub stray_bytes: u64,
    /// Faults applied.
    pub faults_applied: u64,
}

#[derive(Debug)]
struct Slot {
    device: Box<dyn SimDevice>,
    fault: Option<ActiveFault>,
}

#[derive(Debug)]
struct State {
    settings: LineSettings,
    slots: Vec<Slot>,
    stats: SimBusStats,
    /// Monotonic time at which the line last carried a bit (ours or a device's); `None` before the first.
    last_activity: Option<Duration>,
    /// Bytes still on the wire after the host stopped listening; they end at this time.
    busy_until: Duration,
    noise_seed: u64,
}

/// A simulated RS485 bus. Create it, attach devices, and use it through [`Rs485Bus`].
#[derive(Debug)]
pub struct SimBus {
    name: String,
    clock: SimClock,
    state: Arc<Mutex<State>>,
}

/// A handle to a [`SimBus`] that stays with the test while the bus itself is moved to its owner: inject
/// faults, read statistics, attach devices later.
#[derive(Debug, Clone)]
pub struct SimBusHandle {
    state: Arc<Mutex<State>>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic while holding the lock cannot leave the state half-updated in a way that matters to a
    // simulation; keep going rather than poisoning every later test step.
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl SimBus {
    /// A bus named `name` at `settings`, advancing `clock`.
    pub fn new(name: impl Into<String>, settings: LineSettings, clock: SimClock) -> Self {
        let state = State {
            settings,
            slots: Vec::new(),
            stats: SimBusStats::default(),
            last_activity: None,
            busy_until: Duration::ZERO,
            noise_seed: 0x9e37_79b9_7f4a_7c15,
        };
        SimBus {
            name: name.into(),
            clock,
            state: Arc::new(Mutex::new(state)),
        }
    }

    /// Attaches a device and returns its id.
    pub fn attach(&mut self, device: impl SimDevice + 'static) -> DeviceId {
        self.handle().attach(device)
    }

    /// A handle for the test to keep.
    pub fn handle(&self) -> SimBusHandle {
        SimBusHandle {
            state: Arc::clone(&self.state),
        }
    }

    /// The bus's clock.
    pub fn clock(&self) -> &SimClock {
        &self.clock
    }

    /// Waits until the line has been silent `min_idle` and any stray bytes have passed; returns the
    /// start time of our transmission.
    fn wait_for_idle(&self, state: &State, min_idle: Duration) -> Duration {
        let ready = state
            .last_activity
            .map_or(Duration::ZERO, |last| last + min_idle)
            .max(state.busy_until);
        self.clock.advance_to(ready);
        self.clock.monotonic()
    }

    fn transmit(&self, state: &mut State, frame: &[u8], timing: &Rs485Timing) -> Duration {
        let start = self.wait_for_idle(state, timing.min_idle_before);
        let preamble = timing.preamble.map_or(0, |p| usize::from(p.count));
        let end = start + state.settings.wire_time(preamble + frame.len());
        self.clock.advance_to(end);
        state.stats.frames_sent += 1;
        state.stats.bytes_sent += (preamble + frame.len()) as u64;
        state.last_activity = Some(end);
        end
    }

    /// Asks every device about `frame`, applies faults, and returns the replies as (latency, bytes).
    fn collect_replies(&self, state: &mut State, wire: &[u8]) -> Vec<(Duration, Vec<u8>)> {
        let wall = self.clock.wall();
        let settings = state.settings;
        let mut replies: Vec<(Duration, Vec<u8>)> = Vec::new();
        let mut answer_all: Vec<usize> = Vec::new();
        for (index, slot) in state.slots.iter_mut().enumerate() {
            if slot
                .device
                .line_settings()
                .is_some_and(|own| own != settings)
            {
                continue; // hears garbage at the wrong baud or parity
            }
            let reply = slot.device.on_frame(wire, wall);
            let fault = slot.fault.as_ref().map(|f| f.fault.clone());
            match (reply, fault) {
                (_, Some(Fault::Silence)) => {
                    consume(slot);
                    state.stats.faults_applied += 1;
                }
                (None, Some(Fault::AnswerAll)) => answer_all.push(index),
                (None, _) => {}
                (Some(reply), fault) => {
                    let reply = match fault {
                        Some(fault) => {
                            consume(slot);
                            state.stats.faults_applied += 1;
                            apply(fault, reply, &mut state.noise_seed)
                        }
                        None => reply,
                    };
                    replies.push((reply.latency, reply.bytes));
                }
            }
        }
        // A device told to answer everything echoes the first genuine answer one character later.
        if let Some((latency, bytes)) = replies.first().cloned() {
            for index in answer_all {
                consume(&mut state.slots[index]);
                state.stats.faults_applied += 1;
                replies.push((latency + settings.char_time(), bytes.clone()));
            }
        }
        replies
    }
}

fn consume(slot: &mut Slot) {
    if let Some(active) = slot.fault.as_mut() {
        if let Some(remaining) = active.remaining.as_mut() {
            *remaining = remaining.saturating_sub(1);
            if *remaining == 0 {
                slot.fault = None;
            }
        }
    }
}

fn next_noise(seed: &mut u64) -> u8 {
    // xorshift64: deterministic noise so that a failing test replays the same bytes.
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    (*seed >> 24) as u8
}

fn apply(fault: Fault, mut reply: SimReply, seed: &mut u64) -> SimReply {
    match fault {
        Fault::Silence | Fault::AnswerAll => {}
        Fault::Garbage { len } => reply.bytes = (0..len).map(|_| next_noise(seed)).collect(),
        Fault::CorruptByte { index, mask } => {
            if !reply.bytes.is_empty() {
                let at = index % reply.bytes.len();
                reply.bytes[at] ^= mask;
            }
        }
        Fault::Late { extra } => reply.latency += extra,
        Fault::Truncate { keep } => reply.bytes.truncate(keep),
    }
    reply
}

/// Merges overlapping replies on a grid of character slots, as a wired AND of the bits.
fn merge(
    settings: &LineSettings,
    mut replies: Vec<(Duration, Vec<u8>)>,
) -> Option<(Duration, Vec<u8>, bool)> {
    replies.retain(|(_, bytes)| !bytes.is_empty());
    replies.sort_by_key(|(latency, _)| *latency);
    let (first_latency, _) = replies.first()?.clone();
    if replies.len() == 1 {
        let (latency, bytes) = replies.pop()?;
        return Some((latency, bytes, false));
    }
    let char_nanos = settings.char_time().as_nanos().max(1);
    let mut merged: Vec<u8> = Vec::new();
    let mut overlapped = false;
    for (latency, bytes) in &replies {
        let offset = ((latency.as_nanos() - first_latency.as_nanos()) / char_nanos) as usize;
        if offset < merged.len() {
            overlapped = true;
        }
        for (i, byte) in bytes.iter().enumerate() {
            match merged.get_mut(offset + i) {
                Some(existing) => *existing &= byte,
                None => {
                    merged.resize(offset + i, 0xFF);
                    merged.push(*byte);
                }
            }
        }
    }
    Some((first_latency, merged, overlapped))
}

impl Rs485Bus for SimBus {
    fn name(&self) -> &str {
        &self.name
    }

    fn settings(&self) -> LineSettings {
        lock(&self.state).settings
    }

    fn set_settings(&mut self, settings: LineSettings) -> Result<(), HalError> {
        settings.validate().map_err(|e| {
            HalError::new(crate::ErrorKind::InvalidSettings, &self.name, e.to_string())
        })?;
        lock(&self.state).settings = settings;
        Ok(())
    }

    fn direction(&self) -> DirectionControl {
        DirectionControl::Automatic
    }

    fn send(&mut self, frame: &[u8], timing: &Rs485Timing) -> Result<(), HalError> {
        let state = Arc::clone(&self.state);
        let mut state = lock(&state);
        let wire = with_preamble(frame, timing);
        let end = self.transmit(&mut state, frame, timing);
        // Devices still hear a broadcast; any (wrong) answer is stray noise on the line.
        let replies = self.collect_replies(&mut state, &wire);
        if let Some((latency, bytes, _)) = merge(&state.settings, replies) {
            state.stats.stray_bytes += bytes.len() as u64;
            state.busy_until = end + latency + state.settings.wire_time(bytes.len());
        }
        self.clock.advance(timing.turnaround);
        Ok(())
    }

    fn transact(
        &mut self,
        request: &[u8],
        timing: &Rs485Timing,
        reply: &mut Vec<u8>,
        is_complete: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<ReplyInfo, HalError> {
        reply.clear();
        let state = Arc::clone(&self.state);
        let mut state = lock(&state);
        let wire = with_preamble(request, timing);
        let end = self.transmit(&mut state, request, timing);
        let replies = self.collect_replies(&mut state, &wire);
        let settings = state.settings;
        let listen_from = end + timing.turnaround;
        let give_up = listen_from + timing.first_byte_timeout;

        let Some((latency, bytes, collided)) = merge(&settings, replies) else {
            self.clock.advance_to(give_up);
            return Ok(ReplyInfo {
                end: ReplyEnd::NoReply,
                latency: None,
            });
        };
        if collided {
            state.stats.collisions += 1;
        }
        let reply_start = end + latency.max(timing.turnaround);
        let reply_end = reply_start + settings.wire_time(bytes.len());
        if reply_start > give_up {
            // The reply comes after we stopped listening: it is noise on the line for the next exchange.
            self.clock.advance_to(give_up);
            state.stats.stray_bytes += bytes.len() as u64;
            state.busy_until = reply_end;
            state.last_activity = Some(reply_end);
            return Ok(ReplyInfo {
                end: ReplyEnd::NoReply,
                latency: None,
            });
        }
        state.stats.replies += 1;
        for (count, byte) in bytes.iter().enumerate() {
            reply.push(*byte);
            state.stats.bytes_received += 1;
            if is_complete(reply) {
                let at = reply_start + settings.wire_time(count + 1);
                self.clock.advance_to(at);
                let rest = bytes.len() - (count + 1);
                state.stats.stray_bytes += rest as u64;
                state.busy_until = reply_end;
                state.last_activity = Some(if rest > 0 { reply_end } else { at });
                return Ok(ReplyInfo {
                    end: ReplyEnd::Complete,
                    latency: Some(reply_start - end),
                });
            }
        }
        self.clock.advance_to(reply_end + timing.inter_byte_timeout);
        state.last_activity = Some(reply_end);
        Ok(ReplyInfo {
            end: ReplyEnd::Silence,
            latency: Some(reply_start - end),
        })
    }
}

fn with_preamble(frame: &[u8], timing: &Rs485Timing) -> Vec<u8> {
    let mut wire = Vec::with_capacity(frame.len() + 4);
    if let Some(p) = timing.preamble {
        wire.extend(std::iter::repeat_n(p.byte, usize::from(p.count)));
    }
    wire.extend_from_slice(frame);
    wire
}

impl SimBusHandle {
    /// Attaches a device and returns its id.
    pub fn attach(&self, device: impl SimDevice + 'static) -> DeviceId {
        let mut state = lock(&self.state);
        state.slots.push(Slot {
            device: Box::new(device),
            fault: None,
        });
        DeviceId(state.slots.len() - 1)
    }

    /// Applies `fault` to the device's next `times` replies (`None`: until cleared).
    pub fn inject(&self, device: DeviceId, fault: Fault, times: Option<u32>) {
        if let Some(slot) = lock(&self.state).slots.get_mut(device.0) {
            slot.fault = Some(ActiveFault {
                fault,
                remaining: times,
            });
        }
    }

    /// Removes any fault from the device.
    pub fn clear_fault(&self, device: DeviceId) {
        if let Some(slot) = lock(&self.state).slots.get_mut(device.0) {
            slot.fault = None;
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> SimBusStats {
        lock(&self.state).stats
    }

    /// Runs `f` on the device (to inspect or change a simulated meter's state); `None` if no such device.
    pub fn with_device<R>(
        &self,
        device: DeviceId,
        f: impl FnOnce(&mut dyn SimDevice) -> R,
    ) -> Option<R> {
        lock(&self.state)
            .slots
            .get_mut(device.0)
            .map(|slot| f(slot.device.as_mut()))
    }

    /// Offers a frame to every device outside any bus timing (used by [`PtyServer`](super::PtyServer),
    /// which runs in real time), applying faults; returns the merged reply and its latency.
    pub(crate) fn answer_now(&self, frame: &[u8], wall: std::time::SystemTime) -> Option<SimReply> {
        let mut state = lock(&self.state);
        let settings = state.settings;
        let mut replies = Vec::new();
        let mut seed = state.noise_seed;
        for slot in state.slots.iter_mut() {
            if slot
                .device
                .line_settings()
                .is_some_and(|own| own != settings)
            {
                continue;
            }
            let Some(reply) = slot.device.on_frame(frame, wall) else {
                continue;
            };
            let fault = slot.fault.as_ref().map(|f| f.fault.clone());
            let reply = match fault {
                Some(Fault::Silence) => {
                    consume(slot);
                    continue;
                }
                Some(fault) => {
                    consume(slot);
                    apply(fault, reply, &mut seed)
                }
                None => reply,
            };
            replies.push((reply.latency, reply.bytes));
        }
        state.noise_seed = seed;
        merge(&settings, replies).map(|(latency, bytes, _)| SimReply { bytes, latency })
    }
}
