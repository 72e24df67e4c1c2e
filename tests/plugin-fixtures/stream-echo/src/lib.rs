//! Plugin-host test fixture: a tiny stream driver (a pretend coordinator) to exercise the stream shims.
//! It answers every chunk of bytes with `ACK:` and the bytes, reports the first byte as a device seen,
//! reports a link-up on the first tick, and panics on the bytes `panic`.

use std::collections::VecDeque;

use concentrator_plugin_sdk::{Now, Rejection, StreamDriver, StreamEvent};

/// The pretend coordinator.
#[derive(Debug, Default)]
pub struct StreamEcho {
    outgoing: VecDeque<Vec<u8>>,
    events: VecDeque<StreamEvent>,
    ticked: bool,
}

impl StreamDriver for StreamEcho {
    fn open(config: &str, _now: Now) -> Result<Self, Rejection> {
        if config.contains("refuse") {
            return Err("this coordinator refuses configs that say `refuse`".into());
        }
        Ok(StreamEcho::default())
    }

    fn on_bytes(&mut self, bytes: &[u8]) -> Result<(), Rejection> {
        if bytes == b"panic" {
            panic!("coordinator state machine reached an impossible state");
        }
        let mut reply = b"ACK:".to_vec();
        reply.extend_from_slice(bytes);
        self.outgoing.push_back(reply);
        if let Some(first) = bytes.first() {
            self.events.push_back(StreamEvent::DeviceSeen {
                address: vec![*first],
            });
        }
        Ok(())
    }

    fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.outgoing.pop_front()
    }

    fn on_tick(&mut self, _now: Now) -> Result<(), Rejection> {
        if !self.ticked {
            self.ticked = true;
            self.events.push_back(StreamEvent::LinkUp);
        }
        Ok(())
    }

    fn poll_event(&mut self) -> Option<StreamEvent> {
        self.events.pop_front()
    }
}

concentrator_plugin_sdk::declare_stream_driver!(
    StreamEcho,
    kind = coordinator,
    name = "stream-echo",
    version = "0.2.0"
);
concentrator_plugin_sdk::export_plugin!();
