//! GPIO lines: the `embedded-hal` 1.0 digital traits, plus the named roles the appliance uses them for.
//!
//! Backends implement [`OutputPin`] and [`InputPin`] with [`HalError`](crate::HalError) as their error,
//! so the daemon can hold any of them as `Box<dyn OutputLine>`.

pub use embedded_hal::digital::{ErrorType, InputPin, OutputPin, PinState, StatefulOutputPin};

use crate::HalError;

/// An output line usable behind a trait object (direction line, modem power key, status LED).
pub trait OutputLine: OutputPin<Error = HalError> + Send + std::fmt::Debug {}
impl<T: OutputPin<Error = HalError> + Send + std::fmt::Debug> OutputLine for T {}

/// An input line usable behind a trait object (a button, a modem status line).
pub trait InputLine: InputPin<Error = HalError> + Send + std::fmt::Debug {}
impl<T: InputPin<Error = HalError> + Send + std::fmt::Debug> InputLine for T {}
