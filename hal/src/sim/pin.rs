//! Simulated GPIO lines whose level a test can read and set.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use embedded_hal::digital::{ErrorType, InputPin, OutputPin, StatefulOutputPin};

use crate::HalError;

/// A GPIO line in memory, shared by cloning: the daemon drives one clone, the test watches another.
#[derive(Debug, Clone)]
pub struct SimPin {
    name: Arc<str>,
    high: Arc<AtomicBool>,
    edges: Arc<AtomicU32>,
}

impl SimPin {
    /// A line that starts low.
    pub fn new(name: &str) -> Self {
        SimPin {
            name: name.into(),
            high: Arc::new(AtomicBool::new(false)),
            edges: Arc::new(AtomicU32::new(0)),
        }
    }

    /// The line's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The current level.
    pub fn level(&self) -> bool {
        self.high.load(Ordering::SeqCst)
    }

    /// How many times the level changed.
    pub fn edges(&self) -> u32 {
        self.edges.load(Ordering::SeqCst)
    }

    /// Sets the level from outside (as a button or a modem's status output would).
    pub fn drive(&self, high: bool) {
        if self.high.swap(high, Ordering::SeqCst) != high {
            self.edges.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl ErrorType for SimPin {
    type Error = HalError;
}

impl OutputPin for SimPin {
    fn set_low(&mut self) -> Result<(), HalError> {
        self.drive(false);
        Ok(())
    }

    fn set_high(&mut self) -> Result<(), HalError> {
        self.drive(true);
        Ok(())
    }
}

impl StatefulOutputPin for SimPin {
    fn is_set_high(&mut self) -> Result<bool, HalError> {
        Ok(self.level())
    }

    fn is_set_low(&mut self) -> Result<bool, HalError> {
        Ok(!self.level())
    }
}

impl InputPin for SimPin {
    fn is_high(&mut self) -> Result<bool, HalError> {
        Ok(self.level())
    }

    fn is_low(&mut self) -> Result<bool, HalError> {
        Ok(!self.level())
    }
}
