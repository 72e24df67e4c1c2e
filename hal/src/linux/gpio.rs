//! GPIO lines through the Linux GPIO character device (`/dev/gpiochipN`), via linux-embedded-hal.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use embedded_hal::digital::{ErrorType, InputPin, OutputPin, PinState};
use linux_embedded_hal::gpio_cdev::{Chip, LineRequestFlags};
use linux_embedded_hal::CdevPin;

use crate::{ErrorKind, HalError};

/// A GPIO line: a chip and an offset, written `gpiochip0:17` or `/dev/gpiochip0:17`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GpioLineSpec {
    /// The chip's device path.
    pub chip: PathBuf,
    /// The line's offset on the chip.
    pub offset: u32,
}

impl fmt::Display for GpioLineSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.chip.display(), self.offset)
    }
}

impl FromStr for GpioLineSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (chip, offset) = s.rsplit_once(':').ok_or_else(|| {
            format!("`{s}` is not a GPIO line; write the chip and the offset like `gpiochip0:17`")
        })?;
        let offset = offset.parse().map_err(|_| {
            format!("`{offset}` in `{s}` is not a line offset; write a number like `gpiochip0:17`")
        })?;
        let chip = if chip.starts_with('/') {
            PathBuf::from(chip)
        } else {
            PathBuf::from("/dev").join(chip)
        };
        Ok(GpioLineSpec { chip, offset })
    }
}

fn gpio_err(spec: &GpioLineSpec, doing: &str, e: impl fmt::Display) -> HalError {
    let text = e.to_string();
    let kind = if text.contains("No such file") {
        ErrorKind::NotFound
    } else if text.contains("ermission denied") {
        ErrorKind::PermissionDenied
    } else if text.contains("busy") {
        ErrorKind::Busy
    } else {
        ErrorKind::Other
    };
    let hint = match kind {
        ErrorKind::NotFound => " (check the chip name; `gpiodetect` lists chips)",
        ErrorKind::PermissionDenied => " (add the daemon's user to the gpio group)",
        ErrorKind::Busy => " (another driver or program holds the line; `gpioinfo` names it)",
        _ => "",
    };
    HalError::new(kind, spec.to_string(), format!("{doing}: {text}{hint}"))
}

fn request(
    spec: &GpioLineSpec,
    flags: LineRequestFlags,
    initial: u8,
    consumer: &str,
) -> Result<CdevPin, HalError> {
    let mut chip = Chip::new(&spec.chip).map_err(|e| gpio_err(spec, "opening the GPIO chip", e))?;
    let line = chip
        .get_line(spec.offset)
        .map_err(|e| gpio_err(spec, "finding the line", e))?;
    let handle = line
        .request(flags, initial, consumer)
        .map_err(|e| gpio_err(spec, "requesting the line", e))?;
    CdevPin::new(handle).map_err(|e| gpio_err(spec, "reading the line's state", e))
}

/// An output line (direction line, modem power key, status LED).
pub struct GpioOutput {
    spec: GpioLineSpec,
    pin: CdevPin,
}

impl GpioOutput {
    /// Requests `spec` as an output, initially `high` or low, labelled `consumer` (shown by `gpioinfo`).
    pub fn open(spec: &GpioLineSpec, consumer: &str, high: bool) -> Result<Self, HalError> {
        let pin = request(spec, LineRequestFlags::OUTPUT, u8::from(high), consumer)?;
        Ok(GpioOutput {
            spec: spec.clone(),
            pin,
        })
    }
}

impl fmt::Debug for GpioOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GpioOutput")
            .field("line", &self.spec.to_string())
            .finish()
    }
}

impl ErrorType for GpioOutput {
    type Error = HalError;
}

impl OutputPin for GpioOutput {
    fn set_low(&mut self) -> Result<(), HalError> {
        self.pin
            .set_state(PinState::Low)
            .map_err(|e| gpio_err(&self.spec, "setting the line low", e))
    }

    fn set_high(&mut self) -> Result<(), HalError> {
        self.pin
            .set_state(PinState::High)
            .map_err(|e| gpio_err(&self.spec, "setting the line high", e))
    }
}

/// An input line.
pub struct GpioInput {
    spec: GpioLineSpec,
    pin: CdevPin,
}

impl GpioInput {
    /// Requests `spec` as an input.
    pub fn open(spec: &GpioLineSpec, consumer: &str) -> Result<Self, HalError> {
        let pin = request(spec, LineRequestFlags::INPUT, 0, consumer)?;
        Ok(GpioInput {
            spec: spec.clone(),
            pin,
        })
    }
}

impl fmt::Debug for GpioInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GpioInput")
            .field("line", &self.spec.to_string())
            .finish()
    }
}

impl ErrorType for GpioInput {
    type Error = HalError;
}

impl InputPin for GpioInput {
    fn is_high(&mut self) -> Result<bool, HalError> {
        self.pin
            .is_high()
            .map_err(|e| gpio_err(&self.spec, "reading the line", e))
    }

    fn is_low(&mut self) -> Result<bool, HalError> {
        self.pin
            .is_low()
            .map_err(|e| gpio_err(&self.spec, "reading the line", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_line_specs() {
        let spec: GpioLineSpec = "gpiochip0:17".parse().unwrap();
        assert_eq!(spec.chip, PathBuf::from("/dev/gpiochip0"));
        assert_eq!(spec.offset, 17);
        assert_eq!(
            "/dev/gpiochip4:3"
                .parse::<GpioLineSpec>()
                .unwrap()
                .to_string(),
            "/dev/gpiochip4:3"
        );
        assert!("gpiochip0"
            .parse::<GpioLineSpec>()
            .unwrap_err()
            .contains("gpiochip0:17"));
        assert!("gpiochip0:x".parse::<GpioLineSpec>().is_err());
    }

    #[test]
    fn missing_chip_is_not_found() {
        let spec: GpioLineSpec = "/dev/gpiochip-none:1".parse().unwrap();
        let err = GpioOutput::open(&spec, "test", false).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
        assert!(err.to_string().contains("gpiochip-none"));
    }
}
