//! Opening the configured buses on their backends.

use std::time::Duration;

use concentrator_hal::sim::{SimBus, SimClock};
use concentrator_hal::{Clock, HalError, LineSettings, Rs485Bus, SystemClock};

use crate::config::{Backend, BusConfig, Config, DirectionMode, MeterConfig};

/// An opened bus with the clock its timing runs on.
pub struct OpenBus {
    /// The bus.
    pub bus: Box<dyn Rs485Bus>,
    /// The clock that the bus's timing runs on (a sim bus has its own, paced to the wire).
    pub clock: Box<dyn Clock>,
    /// A line for the log: backend, device, settings, direction control.
    pub description: String,
}

impl std::fmt::Debug for OpenBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.description)
    }
}

/// The line settings a validated bus config names.
pub fn line_settings(bus: &BusConfig) -> Result<LineSettings, HalError> {
    bus.line_settings()
}

/// Opens one bus. A sim bus gets emulated meters for the config's meters on it, and a paced clock (it
/// runs at the speed of the wire).
pub fn open(config: &Config, bus: &BusConfig) -> Result<OpenBus, HalError> {
    open_with(config, bus, true)
}

/// Opens one bus; a sim bus's clock is paced to the wire only when `paced` (a scan of simulated meters
/// need not wait for real time).
pub fn open_with(config: &Config, bus: &BusConfig, paced: bool) -> Result<OpenBus, HalError> {
    open_on(bus, &config.meters, paced)
}

/// [`open_with`] given only the meters (those of other buses are skipped).
pub fn open_on(bus: &BusConfig, meters: &[MeterConfig], paced: bool) -> Result<OpenBus, HalError> {
    let settings = line_settings(bus)?;
    let name = bus.name.get_ref().clone();
    match bus.backend.get_ref() {
        Backend::Sim => {
            let clock = if paced {
                SimClock::new_paced()
            } else {
                SimClock::new_virtual()
            };
            let mut sim = SimBus::new(name.clone(), settings, clock.clone());
            let emulated = crate::sim_meters::attach(meters, bus, &mut sim);
            Ok(OpenBus {
                bus: Box::new(sim),
                clock: Box::new(clock),
                description: format!("{name}: sim, {settings}, {emulated} emulated meters"),
            })
        }
        Backend::Linux => open_linux(bus, settings),
        Backend::Rpi => open_rpi(bus, settings),
    }
}

fn open_linux(bus: &BusConfig, settings: LineSettings) -> Result<OpenBus, HalError> {
    use concentrator_hal::linux::{KernelRs485, SerialBusConfig};
    let name = bus.name.get_ref().clone();
    let path = bus
        .path
        .as_ref()
        .map(|p| p.get_ref().clone())
        .unwrap_or_default();
    let direction_gpio = match &bus.direction_gpio {
        Some(spec) if bus.direction != DirectionMode::Adapter => {
            Some(spec.get_ref().parse().map_err(|e: String| {
                HalError::new(
                    concentrator_hal::ErrorKind::InvalidSettings,
                    name.clone(),
                    e,
                )
            })?)
        }
        _ => None,
    };
    let kernel_rs485 = match bus.direction {
        DirectionMode::Auto => KernelRs485::IfSupported,
        DirectionMode::Kernel => KernelRs485::Required,
        DirectionMode::Gpio | DirectionMode::Adapter => KernelRs485::Off,
    };
    let serial = SerialBusConfig {
        name: name.clone(),
        path: path.clone(),
        settings,
        kernel_rs485,
        direction_gpio,
        turnaround: Duration::from_millis(u64::from(bus.turnaround_ms)),
        echo: bus.echo,
    };
    let opened = serial.open()?;
    let description = format!(
        "{name}: linux, {}, {settings}, direction {:?}",
        path.display(),
        opened.direction()
    );
    Ok(OpenBus {
        bus: Box::new(opened),
        clock: Box::new(SystemClock::new()),
        description,
    })
}

#[cfg(feature = "rpi")]
fn open_rpi(bus: &BusConfig, settings: LineSettings) -> Result<OpenBus, HalError> {
    let name = bus.name.get_ref().clone();
    let board = concentrator_hal::rpi::RpiBoard::detect()?;
    let path = bus
        .path
        .as_ref()
        .map(|p| p.get_ref().display().to_string())
        .unwrap_or_default();
    let bcm = bus
        .direction_gpio
        .as_ref()
        .and_then(|g| g.get_ref().parse::<u8>().ok())
        .unwrap_or(17);
    let opened = board.rs485_uart(&name, &path, settings, bcm)?;
    let description = format!(
        "{name}: rpi ({}), {path}, {settings}, direction bcm{bcm}",
        board.model()
    );
    Ok(OpenBus {
        bus: Box::new(opened),
        clock: Box::new(SystemClock::new()),
        description,
    })
}

#[cfg(not(feature = "rpi"))]
fn open_rpi(bus: &BusConfig, _settings: LineSettings) -> Result<OpenBus, HalError> {
    Err(HalError::new(
        concentrator_hal::ErrorKind::Unsupported,
        bus.name.get_ref().clone(),
        "this build has no Raspberry Pi backend; install the appliance package (built with --features rpi), or use backend = \"linux\" with the UART's path",
    ))
}
