//! Lending a running bus: a scan from the web UI goes through the bus's own scheduler instead of
//! opening the port a second time (which the port's exclusive lock refuses, and which would mix two
//! programs' frames on one wire). Each exchange of the scan is handed to the bus's thread as a loan and
//! runs between the routine polls, at the scan's line settings, which are put back after it; so the
//! meters already configured keep being read while the scan runs, only more slowly.
//!
//! The scheduler runs loans in slices of at most [`SLICE`] before it goes back to its meters, and a
//! waiting loan wakes the bus's thread from its sleep between polls ([`pending`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use concentrator_hal::{
    DirectionControl, ErrorKind, HalError, LineSettings, ReplyInfo, Rs485Bus, Rs485Timing,
};

/// Work done on the bus's thread with the bus.
pub type BusLoan = Box<dyn FnOnce(&mut dyn Rs485Bus) + Send>;

/// Longest the scheduler runs loans before it turns back to its meters.
pub const SLICE: Duration = Duration::from_millis(1000);

/// How long the scheduler waits for a borrower's next exchange before it turns back to its meters.
const NEXT_LOAN: Duration = Duration::from_millis(20);

/// How long a borrower waits for its exchange to run (a poll of every meter may come first).
const WAIT_FOR_BUS: Duration = Duration::from_secs(60);

#[derive(Clone)]
struct Lender {
    tx: Sender<BusLoan>,
    pending: Arc<AtomicUsize>,
}

/// The running schedulers' lenders, by bus name (one daemon per process).
static LENDERS: Mutex<BTreeMap<String, Lender>> = Mutex::new(BTreeMap::new());

fn lenders() -> std::sync::MutexGuard<'static, BTreeMap<String, Lender>> {
    LENDERS.lock().unwrap_or_else(|p| p.into_inner())
}

/// The receiving end a scheduler keeps for its bus `name`; registering replaces a previous one.
pub(super) struct LoanDesk {
    rx: Receiver<BusLoan>,
    pending: Arc<AtomicUsize>,
}

impl LoanDesk {
    pub(super) fn open(name: &str) -> LoanDesk {
        let (tx, rx) = channel();
        let pending = Arc::new(AtomicUsize::new(0));
        lenders().insert(
            name.to_string(),
            Lender {
                tx,
                pending: Arc::clone(&pending),
            },
        );
        LoanDesk { rx, pending }
    }

    /// Runs the loans waiting, and those that follow within [`NEXT_LOAN`], for up to [`SLICE`].
    pub(super) fn serve(&self, bus: &mut dyn Rs485Bus) {
        let until = Instant::now() + SLICE;
        let mut next = self.rx.try_recv().ok();
        while let Some(loan) = next.take() {
            self.pending.fetch_sub(1, Ordering::SeqCst);
            loan(bus);
            if Instant::now() >= until {
                break;
            }
            next = self.rx.recv_timeout(NEXT_LOAN).ok();
        }
    }
}

impl Drop for LoanDesk {
    /// A scheduler that stops (its bus went away) takes its desk down, so no one waits on it.
    fn drop(&mut self) {
        let mut lenders = lenders();
        let ours = lenders
            .iter()
            .find(|(_, l)| Arc::ptr_eq(&l.pending, &self.pending))
            .map(|(name, _)| name.clone());
        if let Some(name) = ours {
            lenders.remove(&name);
        }
    }
}

/// Whether a loan waits for bus `name`: its thread should stop sleeping and run it.
pub fn pending(name: &str) -> bool {
    lenders()
        .get(name)
        .is_some_and(|l| l.pending.load(Ordering::SeqCst) > 0)
}

fn lend(name: &str, loan: BusLoan) -> Result<(), HalError> {
    let not_running = || {
        HalError::new(
            ErrorKind::NotFound,
            name.to_string(),
            "the daemon does not run this bus now (its adapter may be missing)".to_string(),
        )
    };
    let lender = lenders().get(name).cloned().ok_or_else(not_running)?;
    lender.pending.fetch_add(1, Ordering::SeqCst);
    lender.tx.send(loan).map_err(|_| {
        lender.pending.fetch_sub(1, Ordering::SeqCst);
        not_running()
    })
}

enum FromBus {
    Chunk(Vec<u8>),
    Done(Result<(ReplyInfo, Vec<u8>), HalError>),
}

/// A running bus borrowed exchange by exchange from its scheduler, usable wherever a bus is (the
/// scanner). Its line settings are its own: set for each exchange and put back after it.
#[derive(Debug)]
pub struct LentBus {
    name: String,
    settings: LineSettings,
    direction: DirectionControl,
}

impl LentBus {
    /// Borrows bus `name` from the daemon's scheduler for it, if the daemon runs that bus now.
    pub fn borrow(name: &str) -> Result<LentBus, HalError> {
        let (tx, rx) = channel();
        lend(
            name,
            Box::new(move |bus: &mut dyn Rs485Bus| {
                let _ = tx.send((bus.settings(), bus.direction()));
            }),
        )?;
        let (settings, direction) = match rx.recv_timeout(WAIT_FOR_BUS) {
            Ok(lent) => lent,
            Err(RecvTimeoutError::Timeout) => return Err(late(name)),
            Err(RecvTimeoutError::Disconnected) => return Err(stopped(name)),
        };
        Ok(LentBus {
            name: name.to_string(),
            settings,
            direction,
        })
    }

    fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut dyn Rs485Bus) -> Result<T, HalError> + Send + 'static,
    ) -> Result<T, HalError> {
        let (tx, rx) = channel();
        let want = self.settings;
        lend(
            &self.name,
            Box::new(move |bus: &mut dyn Rs485Bus| {
                let _ = tx.send(with_settings(bus, want, work));
            }),
        )?;
        match rx.recv_timeout(WAIT_FOR_BUS) {
            Ok(result) => result,
            Err(RecvTimeoutError::Timeout) => Err(late(&self.name)),
            Err(RecvTimeoutError::Disconnected) => Err(stopped(&self.name)),
        }
    }
}

/// Runs `work` on `bus` at `want`, putting the bus's own settings back after it.
fn with_settings<T>(
    bus: &mut dyn Rs485Bus,
    want: LineSettings,
    work: impl FnOnce(&mut dyn Rs485Bus) -> Result<T, HalError>,
) -> Result<T, HalError> {
    let own = bus.settings();
    if own != want {
        bus.set_settings(want)?;
    }
    let result = work(bus);
    if own != want {
        let restored = bus.set_settings(own);
        if let Err(e) = restored {
            log::error!(
                "bus {}: cannot put its line settings back after a scan's exchange: {e}",
                bus.name()
            );
        }
    }
    result
}

fn stopped(name: &str) -> HalError {
    HalError::new(
        ErrorKind::Disconnected,
        name.to_string(),
        "the bus's worker stopped during the scan (its adapter went away, or the daemon is stopping)"
            .to_string(),
    )
}

fn late(name: &str) -> HalError {
    HalError::new(
        ErrorKind::Timeout,
        name.to_string(),
        format!("the bus's worker did not run the scan's exchange within {} s; it may be stuck on a meter: see the log", WAIT_FOR_BUS.as_secs()),
    )
}

impl Rs485Bus for LentBus {
    fn name(&self) -> &str {
        &self.name
    }

    fn settings(&self) -> LineSettings {
        self.settings
    }

    fn set_settings(&mut self, settings: LineSettings) -> Result<(), HalError> {
        // Checked by the port at the next exchange; kept here until then.
        self.settings = settings;
        Ok(())
    }

    fn direction(&self) -> DirectionControl {
        self.direction.clone()
    }

    fn send(&mut self, frame: &[u8], timing: &Rs485Timing) -> Result<(), HalError> {
        let (frame, timing) = (frame.to_vec(), timing.clone());
        self.run(move |bus| bus.send(&frame, &timing))
    }

    fn transact(
        &mut self,
        request: &[u8],
        timing: &Rs485Timing,
        reply: &mut Vec<u8>,
        is_complete: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<ReplyInfo, HalError> {
        // The bus's thread asks this thread whether the reply is whole after each chunk, so the
        // scanner's own test of a complete frame ends the exchange as it would on its own port.
        let (to_borrower, from_bus) = channel::<FromBus>();
        let (to_bus, verdicts) = channel::<bool>();
        let (request, timing, want) = (request.to_vec(), timing.clone(), self.settings);
        lend(
            &self.name,
            Box::new(move |bus: &mut dyn Rs485Bus| {
                let result = with_settings(bus, want, |bus| {
                    let mut bytes = Vec::new();
                    let info = bus.transact(&request, &timing, &mut bytes, &mut |r| {
                        if to_borrower.send(FromBus::Chunk(r.to_vec())).is_err() {
                            return true;
                        }
                        verdicts.recv_timeout(WAIT_FOR_BUS).unwrap_or(true)
                    })?;
                    Ok((info, bytes))
                });
                let _ = to_borrower.send(FromBus::Done(result));
            }),
        )?;
        loop {
            match from_bus.recv_timeout(WAIT_FOR_BUS) {
                Ok(FromBus::Chunk(bytes)) => {
                    let _ = to_bus.send(is_complete(&bytes));
                }
                Ok(FromBus::Done(result)) => {
                    let (info, bytes) = result?;
                    *reply = bytes;
                    return Ok(info);
                }
                Err(RecvTimeoutError::Timeout) => return Err(late(&self.name)),
                Err(RecvTimeoutError::Disconnected) => return Err(stopped(&self.name)),
            }
        }
    }
}
