//! Pushes [`Notice`]s to the customers' open sessions as things happen (not polled).

use std::collections::HashMap;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Mutex;

use concentrator_mpc::backend::Notice;

use crate::store::Store;

/// Subscriptions per customer.
#[derive(Debug, Default)]
pub struct Notifier {
    subs: Mutex<HashMap<String, Vec<Sender<Notice>>>>,
}

impl Notifier {
    /// No subscriptions.
    pub fn new() -> Self {
        Notifier::default()
    }

    /// Notices for `customer` from now on, until the receiver is dropped.
    pub fn subscribe(&self, customer: &str) -> Receiver<Notice> {
        let (tx, rx) = channel();
        self.subs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(customer.to_string())
            .or_default()
            .push(tx);
        rx
    }

    /// Sends `notice` to every customer whose meters include `meter`; forgets closed receivers.
    pub fn meter(&self, store: &Store, meter: &str, notice: Notice) {
        let customers = match store.customers() {
            Ok(c) => c,
            Err(e) => {
                log::error!("notices: cannot list the customers of meter {meter}: {e}");
                return;
            }
        };
        let mut subs = self.subs.lock().unwrap_or_else(|p| p.into_inner());
        for c in customers
            .iter()
            .filter(|c| c.meters.iter().any(|m| m == meter))
        {
            if let Some(list) = subs.get_mut(&c.id) {
                list.retain(|tx| tx.send(notice.clone()).is_ok());
            }
        }
        subs.retain(|_, l| !l.is_empty());
    }
}
