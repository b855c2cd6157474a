//! The drill crate's integration tests in one test binary: synthetic sites in virtual time, the swarm against the
//! bridge, and Janus' VideoRoom.

mod janus_videoroom;
mod site_virtual_time;
mod swarm_bridge;
mod ulpfec_str0m;
