//! The live sessions of each device, so that a change made elsewhere (a revocation, a new
//! line) reaches them: [`SessionRegistry::kick`] ends them, [`SessionRegistry::refresh`] makes
//! them reload the queues they read.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicBool, Ordering},
    },
};

use tokio::sync::Notify;

use crate::store::DeviceId;

/// What a live session can be told: flags, and one wake-up for both (a session waits on one
/// future for its signals, not one per signal: it makes that future again at every turn of
/// its loop).
#[derive(Default)]
pub struct SessionSignals {
    kick: AtomicBool,
    refresh: AtomicBool,
    notify: Notify,
}

/// The signals a session found raised.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Raised {
    /// End the session (revoked, deactivated).
    pub kick: bool,
    /// The queues the device reads changed: reload them.
    pub refresh: bool,
}

impl SessionSignals {
    /// Waits until a signal is raised (or returns at once if one was since the last wait),
    /// and lowers the signals it returns.
    pub async fn raised(&self) -> Raised {
        loop {
            let raised = Raised {
                kick: self.kick.swap(false, Ordering::AcqRel),
                refresh: self.refresh.swap(false, Ordering::AcqRel),
            };
            if raised != Raised::default() {
                return raised;
            }
            self.notify.notified().await;
        }
    }

    fn raise(&self, flag: &AtomicBool) {
        flag.store(true, Ordering::Release);
        // A stored permit: a session between two waits still sees the signal.
        self.notify.notify_one();
    }
}

/// Every live session's signals, by device. A session holds its [`SessionSignals`]; the
/// registry keeps only weak references, dropped when the session ends.
#[derive(Default)]
pub struct SessionRegistry {
    devices: Mutex<HashMap<DeviceId, Vec<Weak<SessionSignals>>>>,
}

impl SessionRegistry {
    /// Devices with a live session, and the live sessions (a device may have several).
    pub fn counts(&self) -> (usize, usize) {
        let devices = self.devices.lock().unwrap_or_else(|e| e.into_inner());
        devices.values().fold((0, 0), |(with, total), list| {
            let live = list.iter().filter(|w| w.strong_count() > 0).count();
            (with + usize::from(live > 0), total + live)
        })
    }

    /// Registers a live session of `device`.
    pub fn register(&self, device: DeviceId) -> Arc<SessionSignals> {
        let signals = Arc::new(SessionSignals::default());
        let mut devices = self.devices.lock().unwrap_or_else(|e| e.into_inner());
        let list = devices.entry(device).or_default();
        list.retain(|w| w.strong_count() > 0);
        list.push(Arc::downgrade(&signals));
        signals
    }

    fn signals(&self, device: DeviceId) -> Vec<Arc<SessionSignals>> {
        let devices = self.devices.lock().unwrap_or_else(|e| e.into_inner());
        devices.get(&device).into_iter().flatten().filter_map(Weak::upgrade).collect()
    }

    /// Ends every live session of `device` (after a revocation or deactivation).
    pub fn kick(&self, device: DeviceId) {
        for signals in self.signals(device) {
            signals.raise(&signals.kick);
        }
    }

    /// Tells every live session of `device` that the queues it reads changed.
    pub fn refresh(&self, device: DeviceId) {
        for signals in self.signals(device) {
            signals.raise(&signals.refresh);
        }
    }
}
