//! One live meeting: who is connected, what they publish, and which source fills each of their slots.
//!
//! Slot policy:
//! * every site receives the chair's audio and video on its first audio and first video slot, and the floor holder's
//!   on its second (the data plane ranks them as the floor's: after the chair's, before any tile);
//! * the chair's video slots show the sites that publish video, in join order; a site keeps its tile while connected;
//! * the chair's audio slots (N of them, `[meeting] audio_slots`, default 3) carry the unmuted sites that publish
//!   audio — **Last-N**: the sites speaking now (RFC 6464 level of their packets, [`SPEAKING_LOUDNESS`] or louder
//!   within [`HANGOVER`]) first, a speaking holder keeping its slot; then the other holders; then join order. An open
//!   microphone in one commune of thousands takes one slot, never more, and a quiet holder gives its slot to a
//!   speaker within one levels report (0.5 s). The floor holder comes first and always has a tile.
//!
//! [`Room::plan`] recomputes the assignment after every change and applies only the difference, so a site never
//! jumps between tiles when another one joins or leaves.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use diemcau_media::{Kind, Media, PeerId, SlotInfo, TrackId};
use diemcau_proto::{ClientStats, MediaKind, PeerState, Role, RosterEntry, ServerMsg, SiteKind, SlotAssignment};
use tokio::sync::mpsc::UnboundedSender;

/// Mean loudness over a levels report (0 silence … 127 = 0 dBov) from which a site counts as speaking: −55 dBov,
/// above a quiet room's noise, below speech at a normal distance from the microphone (≈ −30 dBov).
pub(crate) const SPEAKING_LOUDNESS: u8 = 72;
/// How long a site still counts as speaking after its last loud report (pauses between sentences).
pub(crate) const HANGOVER: Duration = Duration::from_secs(3);

/// What a connection's writer task receives.
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// A message to send.
    Msg(ServerMsg),
    /// Close the WebSocket with this code and reason.
    Close(u16, String),
}

/// An invited site as the room knows it.
#[derive(Debug, Clone)]
pub(crate) struct RoomSite {
    pub(crate) id: i64,
    pub(crate) name: String,
    pub(crate) kind: SiteKind,
    pub(crate) parent_id: Option<i64>,
}

#[derive(Debug)]
pub(crate) struct Member {
    pub(crate) site_id: i64,
    pub(crate) role: Role,
    pub(crate) tx: UnboundedSender<Outgoing>,
    pub(crate) join_seq: u64,
    pub(crate) publishes: Vec<Kind>,
    pub(crate) slots: Vec<SlotInfo>,
    pub(crate) connected: bool,
    pub(crate) muted: bool,
    pub(crate) client_stats: Option<ClientStats>,
    /// Current source (publisher peer) of each slot, by mid.
    assigned: HashMap<String, Option<PeerId>>,
    /// Whether the page was last told to send its camera (pages start sending).
    video_on: bool,
    /// When its microphone was last heard at [`SPEAKING_LOUDNESS`] or louder.
    spoke_at: Option<Instant>,
    /// Spoke within [`HANGOVER`] as of the last levels report.
    pub(crate) speaking: bool,
    /// Audio and video packets received from it so far, and when each count last grew (unix ms): the roll call's
    /// check that its media arrives.
    pub(crate) media_seen: [(u64, Option<i64>); 2],
    /// Its page's cumulative audio samples played and concealed as last reported (the quality sums take the growth).
    pub(crate) audio_reported: (u64, u64),
}

/// A live meeting.
#[derive(Debug)]
pub(crate) struct Room {
    pub(crate) title: String,
    pub(crate) chair_site_id: i64,
    pub(crate) sites: Vec<RoomSite>,
    pub(crate) members: HashMap<PeerId, Member>,
    /// The weakest link among the invited sites when the room was opened (see `ServerMsg::Welcome::weakest_link`).
    pub(crate) weakest_link: Option<diemcau_proto::LinkProfile>,
    /// Invited site → directory link hint, until `weakest_link` has been worked out from them (`None` after).
    pub(crate) pending_hints: Option<HashMap<i64, Option<String>>>,
    /// Roll call, floor, hands, mutes, lock (restored from the meeting's control log when the room opens).
    pub(crate) control: diemcau_meeting::Controller,
    /// Sites that joined this meeting at some time (a locked meeting lets them back in).
    pub(crate) joined_before: HashSet<i64>,
    /// Each site's link quality over the meeting so far (saved to the store every half minute and on closing).
    pub(crate) quality: HashMap<i64, diemcau_store::QualitySums>,
    /// The peer the data plane was last told holds the floor.
    floor_marked: Option<PeerId>,
    next_seq: u64,
}

impl Room {
    pub(crate) fn new(title: String, chair_site_id: i64, sites: Vec<RoomSite>) -> Room {
        let invited = sites.iter().map(|s| s.id).filter(|id| *id != chair_site_id).collect();
        Room {
            control: diemcau_meeting::Controller::new(invited),
            joined_before: HashSet::new(),
            quality: HashMap::new(),
            floor_marked: None,
            title,
            chair_site_id,
            sites,
            members: HashMap::new(),
            weakest_link: None,
            pending_hints: None,
            next_seq: 0,
        }
    }

    pub(crate) fn site_name(&self, id: i64) -> String {
        self.sites.iter().find(|s| s.id == id).map(|s| s.name.clone()).unwrap_or_default()
    }

    /// Adds a member. An existing connection of the same site and role is returned so the caller can close it.
    pub(crate) fn join(
        &mut self,
        peer: PeerId,
        site_id: i64,
        role: Role,
        tx: UnboundedSender<Outgoing>,
        start_muted: bool,
    ) -> Option<PeerId> {
        let replaced = self
            .members
            .iter()
            .find(|(_, m)| m.site_id == site_id && m.role == role && role != Role::Technician)
            .map(|(p, _)| *p);
        self.next_seq += 1;
        self.members.insert(
            peer,
            Member {
                site_id,
                role,
                tx,
                join_seq: self.next_seq,
                publishes: Vec::new(),
                slots: Vec::new(),
                connected: false,
                muted: start_muted && role == Role::Site,
                client_stats: None,
                assigned: HashMap::new(),
                video_on: true,
                spoke_at: None,
                speaking: false,
                media_seen: [(0, None); 2],
                audio_reported: (0, 0),
            },
        );
        if role == Role::Site {
            self.control.set_online(site_id, true);
        }
        replaced
    }

    pub(crate) fn leave(&mut self, peer: PeerId) -> Option<Member> {
        let m = self.members.remove(&peer)?;
        if m.role == Role::Site && !self.members.values().any(|o| o.site_id == m.site_id && o.role == Role::Site) {
            self.control.set_online(m.site_id, false);
        }
        Some(m)
    }

    /// What the control of the meeting means for `site`'s page now.
    pub(crate) fn site_control(&self, site: i64) -> ServerMsg {
        let view = self.control.site_view(site);
        let floor_name = view.floor.map(|f| self.site_name(f));
        ServerMsg::SiteControl { view, now_ms: crate::unix_now_ms(), floor_name }
    }

    /// Whether a site's microphone is off: by itself or by the chair.
    pub(crate) fn is_muted(&self, m: &Member) -> bool {
        m.muted || self.control.is_muted(m.site_id)
    }

    /// The connected peer of a site (its latest connection).
    pub(crate) fn site_peer(&self, site_id: i64) -> Option<PeerId> {
        self.members
            .iter()
            .filter(|(_, m)| m.site_id == site_id && m.role == Role::Site && m.connected)
            .max_by_key(|(_, m)| m.join_seq)
            .map(|(p, _)| *p)
    }

    pub(crate) fn send(&self, peer: PeerId, msg: ServerMsg) {
        if let Some(m) = self.members.get(&peer) {
            let _ = m.tx.send(Outgoing::Msg(msg));
        }
    }

    fn chair(&self) -> Option<PeerId> {
        self.members.iter().filter(|(_, m)| m.role == Role::Chair).min_by_key(|(_, m)| m.join_seq).map(|(p, _)| *p)
    }

    /// The roster as the chair and technicians see it.
    pub(crate) fn roster(&self) -> Vec<RosterEntry> {
        self.sites
            .iter()
            .map(|s| {
                let member = self
                    .members
                    .values()
                    .filter(|m| m.site_id == s.id && m.role != Role::Technician)
                    .max_by_key(|m| m.join_seq);
                RosterEntry {
                    site_id: s.id,
                    name: s.name.clone(),
                    kind: s.kind,
                    parent_id: s.parent_id,
                    state: match member {
                        None => PeerState::Offline,
                        Some(m) if m.connected => PeerState::Connected,
                        Some(_) => PeerState::Connecting,
                    },
                    muted: member.is_none_or(|m| self.is_muted(m)),
                }
            })
            .collect()
    }

    /// Sends the roster to the chair and technicians.
    pub(crate) fn broadcast_roster(&self) {
        let roster = self.roster();
        for m in self.members.values() {
            if matches!(m.role, Role::Chair | Role::Technician) {
                let _ = m.tx.send(Outgoing::Msg(ServerMsg::Roster { sites: roster.clone() }));
            }
        }
    }

    /// Recomputes which source fills every slot and applies the changes to the data plane.
    pub(crate) fn plan(&mut self, media: &Media) {
        let chair = self.chair();
        let chair_publishes = chair.and_then(|c| self.members.get(&c)).map(|m| m.publishes.clone()).unwrap_or_default();
        let mut sites: Vec<(u64, PeerId)> = self
            .members
            .iter()
            .filter(|(_, m)| m.role == Role::Site && m.connected)
            .map(|(p, m)| (m.join_seq, *p))
            .collect();
        sites.sort();

        // The floor holder, heard and seen by every site on its second audio and video slot (pages offer them).
        let floor = self.control.floor().and_then(|f| self.site_peer(f));
        // The data plane ranks the holder's tracks as the floor's in every subscriber's allocation.
        if floor != self.floor_marked {
            if let Some(old) = self.floor_marked {
                media.set_floor(old, false);
            }
            if let Some(new) = floor {
                media.set_floor(new, true);
            }
            self.floor_marked = floor;
        }
        let floor_sends = |kind: Kind| {
            floor.filter(|p| {
                self.members
                    .get(p)
                    .is_some_and(|m| m.publishes.contains(&kind) && (kind == Kind::Video || !self.is_muted(m)))
            })
        };
        let mut desired: Vec<(PeerId, HashMap<String, Option<PeerId>>)> = Vec::new();
        for (pid, m) in &self.members {
            let mut want: HashMap<String, Option<PeerId>> = HashMap::new();
            match m.role {
                Role::Site => {
                    for kind in [Kind::Audio, Kind::Video] {
                        for (i, slot) in m.slots.iter().filter(|s| s.kind == kind).enumerate() {
                            let src = match i {
                                0 if chair_publishes.contains(&kind) => chair,
                                1 => floor_sends(kind).filter(|f| f != pid),
                                _ => None,
                            };
                            want.insert(slot.mid.clone(), src);
                        }
                    }
                }
                Role::Chair if Some(*pid) == chair => {
                    for slot in m.slots.iter().filter(|s| s.duplex) {
                        want.insert(slot.mid.clone(), None);
                    }
                    for kind in [Kind::Audio, Kind::Video] {
                        let eligible: Vec<PeerId> = sites
                            .iter()
                            .map(|(_, p)| *p)
                            .filter(|p| {
                                self.members.get(p).is_some_and(|s| {
                                    s.publishes.contains(&kind) && (kind == Kind::Video || !self.is_muted(s))
                                })
                            })
                            .collect();
                        // The chair's own sendrecv transceivers carry its camera and microphone, not tiles.
                        let slots: Vec<&SlotInfo> = m.slots.iter().filter(|s| s.kind == kind && !s.duplex).collect();
                        // Last-N audio: only the first N of the speakers-first order may hold a slot.
                        let eligible = if kind == Kind::Audio {
                            let held: HashSet<PeerId> = m.assigned.values().flatten().copied().collect();
                            // The floor holder first, whether it speaks or not.
                            let rank = |p: &PeerId| {
                                let speaking = self.members.get(p).is_some_and(|s| s.speaking);
                                (floor != Some(*p), !speaking, !held.contains(p))
                            };
                            let mut e = eligible;
                            e.sort_by_key(rank); // stable: join order within a rank
                            e.truncate(slots.len());
                            e
                        } else {
                            eligible
                        };
                        // Keep current holders that are still eligible; fill free slots in join order.
                        let mut placed: Vec<PeerId> = Vec::new();
                        for s in &slots {
                            if let Some(Some(cur)) = m.assigned.get(&s.mid)
                                && eligible.contains(cur)
                                && !placed.contains(cur)
                            {
                                want.insert(s.mid.clone(), Some(*cur));
                                placed.push(*cur);
                            }
                        }
                        // The floor holder's picture is in a tile: the first free one, else the last tile's.
                        if kind == Kind::Video
                            && let Some(f) = floor.filter(|f| eligible.contains(f) && !placed.contains(f))
                            && let Some(s) = slots.iter().find(|s| !want.contains_key(&s.mid)).or(slots.last())
                        {
                            want.insert(s.mid.clone(), Some(f));
                            placed.push(f);
                        }
                        let mut queue = eligible.iter().filter(|p| !placed.contains(p));
                        for s in &slots {
                            if !want.contains_key(&s.mid) {
                                want.insert(s.mid.clone(), queue.next().copied());
                            }
                        }
                    }
                }
                _ => {
                    for slot in &m.slots {
                        want.insert(slot.mid.clone(), None);
                    }
                }
            }
            desired.push((*pid, want));
        }

        let mut changed_peers = Vec::new();
        for (pid, want) in desired {
            let Some(m) = self.members.get_mut(&pid) else { continue };
            let mut changed = false;
            for slot in &m.slots {
                let new = want.get(&slot.mid).copied().flatten();
                let old = m.assigned.get(&slot.mid).copied().flatten();
                if new != old || !m.assigned.contains_key(&slot.mid) {
                    let track = new.map(|p| TrackId { peer: p, kind: slot.kind });
                    // Fails only for a peer whose media is gone; media_lost() then clears the plan for its next negotiation.
                    if let Err(e) = media.set_slot(pid, &slot.mid, track) {
                        tracing::debug!(peer = pid.0, "slot not applied: {e}");
                    }
                    m.assigned.insert(slot.mid.clone(), new);
                    changed = true;
                }
            }
            if changed {
                changed_peers.push(pid);
            }
        }
        for pid in changed_peers {
            self.send_slots(pid);
        }
        self.dynacast();
    }

    /// A connected site whose camera fills nobody's video slot is asked to stop encoding it, and to start again when
    /// a slot takes it: an unwatched commune's uplink carries audio only.
    fn dynacast(&mut self) {
        let watched: HashSet<PeerId> = self
            .members
            .values()
            .flat_map(|m| {
                m.slots
                    .iter()
                    .filter(|s| s.kind == Kind::Video)
                    .filter_map(|s| m.assigned.get(&s.mid).copied().flatten())
            })
            .collect();
        for (pid, m) in &mut self.members {
            if m.role != Role::Site || !m.connected || !m.publishes.contains(&Kind::Video) {
                continue;
            }
            let on = watched.contains(pid);
            if on != m.video_on {
                m.video_on = on;
                let _ = m.tx.send(Outgoing::Msg(ServerMsg::Publish { video: on }));
            }
        }
    }

    /// Tells a member which site fills each of its slots.
    fn send_slots(&self, pid: PeerId) {
        let Some(m) = self.members.get(&pid) else { return };
        let slots = m
            .slots
            .iter()
            .map(|s| SlotAssignment {
                mid: s.mid.clone(),
                kind: match s.kind {
                    Kind::Audio => MediaKind::Audio,
                    Kind::Video => MediaKind::Video,
                },
                site_id: m
                    .assigned
                    .get(&s.mid)
                    .copied()
                    .flatten()
                    .and_then(|p| self.members.get(&p))
                    .map(|pm| pm.site_id),
            })
            .collect();
        let _ = m.tx.send(Outgoing::Msg(ServerMsg::Slots { slots }));
    }
}

impl Room {
    /// Takes a levels report of the data plane ([`diemcau_media::MediaEvent::AudioLevels`]) at `now`; returns
    /// whether any member started or stopped speaking (then the chair's audio slots must be planned again).
    pub(crate) fn audio_levels(&mut self, now: Instant, levels: &[(PeerId, u8)]) -> bool {
        let mut changed = false;
        for (pid, m) in &mut self.members {
            if levels.iter().any(|(p, l)| p == pid && *l >= SPEAKING_LOUDNESS) {
                m.spoke_at = Some(now);
            }
            let speaking = m.spoke_at.is_some_and(|t| now.saturating_duration_since(t) < HANGOVER);
            changed |= speaking != m.speaking;
            m.speaking = speaking;
        }
        changed
    }

    /// Records the result of a negotiation: what the member publishes and which slots it offers.
    pub(crate) fn negotiated(&mut self, peer: PeerId, publishes: Vec<Kind>, slots: Vec<SlotInfo>) {
        if let Some(m) = self.members.get_mut(&peer) {
            m.assigned.retain(|mid, _| slots.iter().any(|s| &s.mid == mid));
            m.publishes = publishes;
            m.slots = slots;
        }
    }

    /// The member's media is gone (its `Rtc` was removed): forget what the data plane had for it.
    pub(crate) fn media_lost(&mut self, peer: PeerId) {
        if let Some(m) = self.members.get_mut(&peer) {
            m.connected = false;
            m.publishes.clear();
            m.slots.clear();
            m.assigned.clear();
            // Its next peer connection starts sending.
            m.video_on = true;
        }
    }
}

impl Room {
    /// The publishers currently filling any slot of `peer`.
    pub(crate) fn sources_of(&self, peer: PeerId) -> Vec<PeerId> {
        let Some(m) = self.members.get(&peer) else { return Vec::new() };
        let mut v: Vec<PeerId> = m.assigned.values().flatten().copied().collect();
        v.sort();
        v.dedup();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diemcau_media::MediaConfig;
    use tokio::sync::mpsc;

    fn site(id: i64) -> RoomSite {
        RoomSite { id, name: format!("Xã {id}"), kind: SiteKind::Commune, parent_id: Some(1) }
    }

    fn slots(spec: &[(&str, Kind, bool)]) -> Vec<SlotInfo> {
        spec.iter().map(|(m, k, d)| SlotInfo { mid: m.to_string(), kind: *k, duplex: *d }).collect()
    }

    fn last_slots(rx: &mut mpsc::UnboundedReceiver<Outgoing>) -> Vec<SlotAssignment> {
        let mut last = Vec::new();
        while let Ok(o) = rx.try_recv() {
            if let Outgoing::Msg(ServerMsg::Slots { slots }) = o {
                last = slots;
            }
        }
        last
    }

    /// Sites `ids` join as peers 10, 11, … publishing audio and video on two duplex slots, media connected; their
    /// message receivers, in order.
    fn join_sites(room: &mut Room, ids: &[i64]) -> Vec<mpsc::UnboundedReceiver<Outgoing>> {
        let mut receivers = Vec::new();
        for (i, sid) in ids.iter().enumerate() {
            let (tx, rx) = mpsc::unbounded_channel();
            let p = PeerId(10 + i as u64);
            room.join(p, *sid, Role::Site, tx, false);
            room.negotiated(
                p,
                vec![Kind::Audio, Kind::Video],
                slots(&[("0", Kind::Audio, true), ("1", Kind::Video, true)]),
            );
            room.members.get_mut(&p).expect("member").connected = true;
            receivers.push(rx);
        }
        receivers
    }

    fn publish_msgs(rx: &mut mpsc::UnboundedReceiver<Outgoing>) -> Vec<bool> {
        let mut v = Vec::new();
        while let Ok(o) = rx.try_recv() {
            if let Outgoing::Msg(ServerMsg::Publish { video }) = o {
                v.push(video);
            }
        }
        v
    }

    #[test]
    fn a_site_in_no_tile_is_asked_to_stop_its_camera_until_one_frees() {
        let (media, _ev) = Media::start(&MediaConfig { shards: 1, ..Default::default() }).expect("media");
        let mut room = Room::new("Họp".into(), 100, vec![site(100), site(2), site(3)]);
        let (ctx, _crx) = mpsc::unbounded_channel();
        let chair = PeerId(1);
        room.join(chair, 100, Role::Chair, ctx, false);
        // One tile.
        room.negotiated(
            chair,
            vec![Kind::Audio, Kind::Video],
            slots(&[("0", Kind::Audio, true), ("1", Kind::Video, true), ("2", Kind::Video, false)]),
        );
        let mut rx = join_sites(&mut room, &[2, 3]);
        room.plan(&media);
        assert_eq!(publish_msgs(&mut rx[0]), Vec::<bool>::new(), "site 2 holds the tile and keeps sending");
        assert_eq!(publish_msgs(&mut rx[1]), vec![false], "site 3 is in no tile");
        // Planning again changes nothing: no repeated message.
        room.plan(&media);
        assert_eq!(publish_msgs(&mut rx[1]), Vec::<bool>::new());
        // Site 2 leaves: site 3 takes the tile and is asked to send again.
        room.leave(PeerId(10));
        room.plan(&media);
        assert_eq!(publish_msgs(&mut rx[1]), vec![true]);
        media.shutdown();
    }

    #[test]
    fn chair_grid_is_stable_and_audio_follows_mute() {
        let (media, _ev) = Media::start(&MediaConfig { shards: 1, ..Default::default() }).expect("media");
        let mut room = Room::new("Họp".into(), 100, vec![site(100), site(2), site(3), site(4)]);
        let (ctx, mut crx) = mpsc::unbounded_channel();
        let chair = PeerId(1);
        room.join(chair, 100, Role::Chair, ctx, false);
        room.negotiated(
            chair,
            vec![Kind::Audio, Kind::Video],
            slots(&[
                ("0", Kind::Audio, true),
                ("1", Kind::Video, true),
                ("2", Kind::Video, false),
                ("3", Kind::Video, false),
                ("4", Kind::Audio, false),
            ]),
        );
        let mut site_rx = join_sites(&mut room, &[2, 3, 4]);
        room.plan(&media);
        // Two video tiles for three sites: the first two joined.
        let s = last_slots(&mut crx);
        let video: Vec<_> = s.iter().filter(|a| a.kind == MediaKind::Video).map(|a| a.site_id).collect();
        assert_eq!(video, vec![None, Some(2), Some(3)], "the chair's own video mid carries nothing");
        // Every site receives the chair on its two slots.
        for rx in &mut site_rx {
            let s = last_slots(rx);
            assert_eq!(s.iter().map(|a| a.site_id).collect::<Vec<_>>(), vec![Some(100), Some(100)]);
        }
        // Site 2 leaves: site 4 takes the free tile, site 3 keeps its tile.
        room.leave(PeerId(10));
        room.plan(&media);
        let s = last_slots(&mut crx);
        let video: Vec<_> = s.iter().filter(|a| a.kind == MediaKind::Video).map(|a| a.site_id).collect();
        assert_eq!(video, vec![None, Some(4), Some(3)]);
        // Muting site 3 frees its audio slot for site 4.
        room.members.get_mut(&PeerId(11)).expect("member").muted = true;
        room.plan(&media);
        let s = last_slots(&mut crx);
        let audio: Vec<_> = s.iter().filter(|a| a.kind == MediaKind::Audio).map(|a| a.site_id).collect();
        assert!(audio.contains(&Some(4)) && !audio.contains(&Some(3)), "{audio:?}");
        media.shutdown();
    }

    #[test]
    fn the_chair_hears_the_last_n_speakers() {
        let (media, _ev) = Media::start(&MediaConfig { shards: 1, ..Default::default() }).expect("media");
        let ids = [2, 3, 4, 5, 6];
        let mut room = Room::new("Họp".into(), 100, [100].iter().chain(&ids).map(|i| site(*i)).collect());
        let (ctx, mut crx) = mpsc::unbounded_channel();
        room.join(PeerId(1), 100, Role::Chair, ctx, false);
        // Three audio slots (N = 3) and no tiles.
        room.negotiated(
            PeerId(1),
            vec![Kind::Audio, Kind::Video],
            slots(&[
                ("0", Kind::Audio, true),
                ("1", Kind::Audio, false),
                ("2", Kind::Audio, false),
                ("3", Kind::Audio, false),
            ]),
        );
        let _site_rx = join_sites(&mut room, &ids); // peers 10 … 14
        // The sites on the chair's three audio slots, sorted.
        let heard = |room: &Room| -> Vec<i64> {
            let mut h: Vec<i64> = room.members[&PeerId(1)]
                .assigned
                .iter()
                .filter(|(m, _)| m.as_str() != "0")
                .filter_map(|(_, p)| p.and_then(|p| room.members.get(&p)).map(|m| m.site_id))
                .collect();
            h.sort();
            h
        };
        room.plan(&media);
        // Nobody has spoken: the first three to join, as the chair is told.
        assert_eq!(heard(&room), vec![2, 3, 4]);
        let told: Vec<Option<i64>> = last_slots(&mut crx).iter().filter(|a| a.mid != "0").map(|a| a.site_id).collect();
        assert_eq!(told, vec![Some(2), Some(3), Some(4)]);
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let quiet = SPEAKING_LOUDNESS - 1;
        // Site 6 speaks: it takes the slot of a holder that is not speaking; the others stay where they are.
        assert!(room.audio_levels(at(0), &[(PeerId(10), quiet), (PeerId(14), 100)]));
        room.plan(&media);
        assert_eq!(heard(&room), vec![2, 3, 6], "the last-joined quiet holder gives way");
        // Sites 2 and 3 speak too: all three speakers are heard.
        assert!(room.audio_levels(at(500), &[(PeerId(10), 90), (PeerId(11), 90)]));
        room.plan(&media);
        assert_eq!(heard(&room), vec![2, 3, 6]);
        // Site 5 speaks while three speakers hold the slots: it waits …
        assert!(room.audio_levels(at(1000), &[(PeerId(10), 90), (PeerId(11), 90), (PeerId(13), 90)]));
        room.plan(&media);
        assert_eq!(heard(&room), vec![2, 3, 6], "a fourth speaker waits");
        // … until site 6 has been quiet for the hangover (3 s after its last loud report at 0 ms).
        assert!(!room.audio_levels(at(2500), &[(PeerId(10), 90), (PeerId(11), 90), (PeerId(13), 90)]));
        assert!(room.audio_levels(at(3000), &[(PeerId(10), 90), (PeerId(11), 90), (PeerId(13), 90)]));
        room.plan(&media);
        let mut h: Vec<Option<i64>> = room.members[&PeerId(1)]
            .assigned
            .iter()
            .filter(|(m, _)| m.as_str() != "0")
            .map(|(_, p)| p.and_then(|p| room.members.get(&p)).map(|m| m.site_id))
            .collect();
        h.sort();
        assert_eq!(h, vec![Some(2), Some(3), Some(5)]);
        // A muted speaker is never heard.
        room.members.get_mut(&PeerId(13)).expect("member").muted = true;
        room.plan(&media);
        assert!(!heard(&room).contains(&5), "{:?}", heard(&room));
        media.shutdown();
    }
}
