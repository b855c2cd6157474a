//! The body of `POST /api/meetings/{id}/control`: any bytes parse to an action or fail cleanly, and any action the
//! parser accepts is decided by a controller (a roll call in progress, a floor holder) without panicking; what it
//! decides applies without panicking either.
#![no_main]

use diemcau_meeting::{Action, Controller, Input};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(action) = serde_json::from_slice::<Action>(data) else { return };
    let mut c = Controller::new(vec![1, 2, 3]);
    for a in [Action::GiveFloor { site_id: 2 }, Action::StartRollCall {
        mode: diemcau_meeting::RollCallMode::OneByOne,
        order: None,
        seconds: None,
    }] {
        if let Ok(Some(ev)) = c.decide(0, Input::Chair(a)) {
            let l = c.stamp(0, ev);
            c.apply(&l);
        }
    }
    if let Ok(Some(ev)) = c.decide(1, Input::Chair(action)) {
        let l = c.stamp(1, ev);
        c.apply(&l);
        let _ = c.state();
        let _ = c.on_timeout(i64::MAX);
    }
});
