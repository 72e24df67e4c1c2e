//! Plugin-host test fixture: a meter driver whose `begin` reports a frame longer than the host's buffer
//! (without writing past it). The host must catch the length before reading the frame.

use std::ffi::c_void;

use concentrator_fixture_common::QuietMeter;
use concentrator_plugin_sdk::api::{
    MessageBuf, MeterDriverVTable, PluginDeclaration, RawRequest, RawTask, RawTime, Status,
};

unsafe extern "C" fn lying_begin(
    _meter: *mut c_void,
    _task: *const RawTask,
    _now: RawTime,
    out: *mut RawRequest,
    _message: *mut MessageBuf,
) -> Status {
    // SAFETY: the host passes a valid, exclusive request for the call.
    if let Some(out) = unsafe { out.as_mut() } {
        out.frame_len = out.frame_cap + 4096;
        out.expects_reply = 1;
    }
    Status::OK
}

static TABLE: MeterDriverVTable = MeterDriverVTable {
    begin: Some(lying_begin),
    ..concentrator_plugin_sdk::meter_vtable::<QuietMeter>()
};
static DECLARATION: PluginDeclaration =
    concentrator_plugin_sdk::meter_declaration::<QuietMeter>("garbage-lengths", "0.1.0", &TABLE);

concentrator_plugin_sdk::export_declaration!(DECLARATION);
