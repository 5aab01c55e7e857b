//! Circuits whose next hop is a channel owned by another worker.
//!
//! Each worker owns the channels it accepted or opened, and every circuit
//! that arrived on them. When an EXTEND2 names a relay that this worker has
//! no channel to but another worker has, the circuit is *spliced*: the
//! worker that owns the circuit (the **owner**) keeps all of its state and
//! crypto, and the worker that owns the channel (the **holder**) only moves
//! cells between its channel and the owner, by message. No state is shared
//! between threads; all of this travels as [`CrossItem`]s in per-worker
//! batches, one message per destination worker per turn.
//!
//! How it looks to each side:
//! - The owner's circuit table sees a *virtual channel*, a [`ChanId`] that
//!   stands for "worker W's channel C". Its circuits on it are ordinary
//!   circuits with an ordinary next side; the cells the table sends on it
//!   become [`CrossItem::Forward`]s to W, and W's [`CrossItem::Backward`]s
//!   are fed to the table as cells arriving on it.
//! - The holder reserves a real circuit ID on its channel for each spliced
//!   circuit (so its own table never hands it out and counts it against
//!   the idle timeout), sends the owner's cells on it under that ID, and
//!   hands every cell that arrives for that ID to the owner. A DESTROY
//!   either way ends the splice.
//! - Workers announce their open relay channels to each other
//!   ([`CrossItem::ChanUp`] / [`CrossItem::ChanDown`]) so that each keeps
//!   its own copy of who holds which channel. When a channel closes, the
//!   owners' circuits on it are closed as for a local channel
//!   (DESTROY CHANNEL_CLOSED toward the client).
//!
//! A conflux leg (see `proto::circuit::conflux`) is the other way round:
//! its LINK arrived on a channel of one worker, but its set lives in
//! another's table. The circuit moves to the set's worker, which owns it
//! from then on, on a virtual channel for the channel it came on; the
//! worker it came to hosts its circuit ID as for a splice
//! ([`Splices::host_moved_leg`], [`CrossItem::AdoptLeg`]). Owners number
//! their spliced circuits on a virtual channel with the high bit set (as
//! the initiator of a channel does), and holders number the legs they
//! hand over with it clear, so the two never meet.
//!
//! A CREATE2 that reaches a holder whose channel has just closed is
//! answered with `ChanDown`, so the circuit fails as it would have if the
//! channel closed a moment later; the client builds another.
//!
//! Messages between workers are not limited by the link's socket, so a
//! worker that falls behind could make the queue to it grow without bound
//! (a flood of cells that middle hops do not count against any window).
//! Two limits apply, as on a link:
//! - per circuit: each side counts, per spliced circuit, the cells it sent
//!   that the other worker has not taken in yet (from the runtime's count
//!   of items in flight, batches being taken in order). A circuit with
//!   more than the circuit queue limit (`circ_max_cell_queue_size`) in
//!   flight is closed with RESOURCELIMIT, alone, as C closes a circuit
//!   whose queue is too long;
//! - per pair of workers: past [`CROSS_QUEUE_LIMIT`] items in flight the
//!   sender cuts every splice it has with the slow worker
//!   ([`Splices::cut_off`], DESTROY RESOURCELIMIT), as a link whose peer
//!   stops reading is closed.
//!
//! Sans-IO: the worker hands batches in and out; tests drive two workers'
//! tables through it without threads.

use std::collections::{HashMap, VecDeque};

use rand::CryptoRng;

use crate::proto::cell::{CELL_BODY_LEN, ChanCmd, CircId, Destroy, DestroyReason};
use crate::proto::circuit::{ChanId, CircuitTable, IncomingCell, LegHandoff, PeerKind};

/// Items one worker may have queued for another (sent, not yet taken in)
/// before it cuts their splices: 64 full circuit windows, as for a link.
pub const CROSS_QUEUE_LIMIT: usize = 64 * 1000;

/// A worker, by its index (0 ..< number of workers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkerId(pub usize);

/// One thing one worker tells another.
#[allow(clippy::large_enum_variant)] // cells travel inline, as in Action::SendCell
#[derive(Debug)]
pub enum CrossItem {
    /// The sender has an open channel `chan` to this authenticated relay.
    ChanUp {
        chan: ChanId,
        rsa_id: [u8; 20],
        ed_id: [u8; 32],
    },
    /// The sender's channel `chan` closed (or, in answer to a `Forward`,
    /// is no longer there).
    ChanDown { chan: ChanId },
    /// Owner → holder: send this cell on your channel `chan` for my
    /// circuit `vcirc`. A CREATE2 for an unknown `vcirc` starts a splice.
    Forward {
        chan: ChanId,
        vcirc: CircId,
        cmd: ChanCmd,
        body: [u8; CELL_BODY_LEN],
    },
    /// Holder → owner: this cell arrived on my channel `chan` for your
    /// circuit `vcirc`.
    Backward {
        chan: ChanId,
        vcirc: CircId,
        cmd: ChanCmd,
        body: [u8; CELL_BODY_LEN],
    },
    /// Holder → owner: your circuit `vcirc` cannot go on over my channel
    /// (no free circuit ID, or cut off); the next hop already got DESTROY.
    Failed {
        chan: ChanId,
        vcirc: CircId,
        reason: DestroyReason,
    },
    /// DoS bookkeeping (see [`crate::proto::dos`]): handed to the worker
    /// as it comes, not interpreted here.
    Dos(crate::proto::dos::DosMsg),
    /// Holder → owner: a conflux leg that arrived on my channel `chan`
    /// belongs to a set you hold: it is yours now as circuit `vcirc` of
    /// that channel, and its cells cross as `Backward` / `Forward`.
    AdoptLeg {
        chan: ChanId,
        vcirc: CircId,
        leg: Box<LegHandoff>,
    },
}

impl CrossItem {
    fn is_backward(&self) -> bool {
        matches!(self, CrossItem::Backward { .. })
    }
}

/// What one worker sends another in one turn, in order.
#[derive(Debug)]
pub struct Batch {
    pub from: WorkerId,
    pub items: Vec<CrossItem>,
}

/// A relay channel another worker announced.
#[derive(Debug, Clone, Copy)]
struct RemoteChan {
    worker: WorkerId,
    chan: ChanId,
    ed_id: [u8; 32],
}

/// A cell the holder must write on one of its channels.
#[derive(Debug)]
pub struct HostedCell {
    pub chan: ChanId,
    pub circ_id: CircId,
    pub cmd: ChanCmd,
    pub body: [u8; CELL_BODY_LEN],
}

/// One spliced circuit's cells in one direction, as the sender names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Flow {
    /// Owner → holder: our circuit `vcirc` on our virtual channel `chan`.
    Forward { chan: ChanId, vcirc: CircId },
    /// Holder → owner: the circuit `circ_id` we host on our channel `chan`.
    Backward { chan: ChanId, circ_id: CircId },
}

/// What one worker has in flight to another, per circuit (see the module
/// documentation).
#[derive(Debug, Default)]
struct Ledger {
    /// Batches sent and maybe not yet taken in, oldest first: their item
    /// counts and per-circuit counts.
    sent: VecDeque<(usize, HashMap<Flow, u32>)>,
    sent_items: usize,
    /// The per-circuit counts of the batch being built this turn.
    current: HashMap<Flow, u32>,
    /// Per circuit: cells sent or about to be, not yet taken in.
    outstanding: HashMap<Flow, u32>,
}

/// Count one cell of `flow` in this turn's batch to worker `to` (one
/// hash-map increment per spliced cell; the totals are checked once per
/// batch, in [`Splices::take_outboxes`]).
fn count_flow(ledgers: &mut [Ledger], to: WorkerId, flow: Flow) {
    if let Some(l) = ledgers.get_mut(to.0) {
        *l.current.entry(flow).or_insert(0) += 1;
    }
}

/// A DESTROY cell's body.
fn destroy_body(reason: DestroyReason) -> [u8; CELL_BODY_LEN] {
    let mut body = [0u8; CELL_BODY_LEN];
    body[0] = Destroy::new(reason).reason().get();
    body
}

/// One worker's side of every splice: see the module documentation.
pub struct Splices {
    me: WorkerId,
    /// Other workers' open relay channels, by RSA identity, and back.
    directory: HashMap<[u8; 20], Vec<RemoteChan>>,
    directory_ids: HashMap<(WorkerId, ChanId), [u8; 20]>,
    /// Owner side: our virtual channels and what they stand for.
    virtual_chans: HashMap<ChanId, (WorkerId, ChanId)>,
    virtual_of: HashMap<(WorkerId, ChanId), ChanId>,
    /// Holder side: per channel of ours, real circuit ID → (owner, its
    /// circuit). A channel without hosted circuits has no entry and pays
    /// nothing per received cell.
    hosted: HashMap<ChanId, HashMap<CircId, (WorkerId, CircId)>>,
    hosted_ids: HashMap<(WorkerId, ChanId, CircId), CircId>,
    /// What to send each worker at the end of this turn.
    outbox: Vec<Vec<CrossItem>>,
    /// Per worker: what we have in flight to it, per circuit.
    ledgers: Vec<Ledger>,
    /// Cells one circuit may have in flight to another worker.
    flow_cap: u32,
    /// Circuits over `flow_cap`, for the worker to close.
    over_cap: Vec<(WorkerId, Flow)>,
    /// DoS messages received, for the worker.
    dos_in: Vec<crate::proto::dos::DosMsg>,
    /// Relay channels we announced, so a close is announced only for them.
    announced: HashMap<ChanId, [u8; 20]>,
    scratch: Vec<IncomingCell>,
}

impl Splices {
    /// Worker `me` of `workers`.
    pub fn new(me: WorkerId, workers: usize) -> Self {
        Splices {
            me,
            directory: HashMap::new(),
            directory_ids: HashMap::new(),
            virtual_chans: HashMap::new(),
            virtual_of: HashMap::new(),
            hosted: HashMap::new(),
            hosted_ids: HashMap::new(),
            outbox: (0..workers).map(|_| Vec::new()).collect(),
            ledgers: (0..workers).map(|_| Ledger::default()).collect(),
            flow_cap: 2500,
            over_cap: Vec::new(),
            dos_in: Vec::new(),
            announced: HashMap::new(),
            scratch: Vec::new(),
        }
    }

    fn push(&mut self, to: WorkerId, item: CrossItem) {
        if let Some(o) = self.outbox.get_mut(to.0) {
            o.push(item);
        }
    }

    /// Push a cell of `flow`, counting it against the circuit's limit.
    fn push_cell(&mut self, to: WorkerId, flow: Flow, item: CrossItem) {
        self.push(to, item);
        count_flow(&mut self.ledgers, to, flow);
    }

    /// The circuit queue limit (`circ_max_cell_queue_size`) for cells in
    /// flight to another worker.
    pub fn set_flow_cap(&mut self, cap: usize) {
        self.flow_cap = u32::try_from(cap).unwrap_or(u32::MAX);
    }

    /// `in_flight` of the items we sent worker `to` are not taken in yet:
    /// the batches before them were, so their cells no longer count.
    pub fn taken(&mut self, to: WorkerId, in_flight: usize) {
        let Some(l) = self.ledgers.get_mut(to.0) else {
            return;
        };
        while let Some((n, _)) = l.sent.front() {
            if l.sent_items - n < in_flight {
                break;
            }
            l.sent_items -= n;
            let Some((_, counts)) = l.sent.pop_front() else {
                break;
            };
            for (flow, c) in counts {
                if let Some(o) = l.outstanding.get_mut(&flow) {
                    *o = o.saturating_sub(c);
                    if *o == 0 {
                        l.outstanding.remove(&flow);
                    }
                }
            }
        }
    }

    /// Circuits with more cells in flight than the limit since the last
    /// call: the worker closes each (RESOURCELIMIT).
    pub fn take_over_cap(&mut self) -> Vec<(WorkerId, Flow)> {
        std::mem::take(&mut self.over_cap)
    }

    /// Cells of `flow` sent to worker `to` and not taken in (for tests and
    /// metrics; this turn's batch counts once sent).
    pub fn outstanding(&self, to: WorkerId, flow: Flow) -> u32 {
        self.ledgers
            .get(to.0)
            .and_then(|l| l.outstanding.get(&flow))
            .copied()
            .unwrap_or(0)
    }

    /// Send `msg` to worker `to` with this turn's batch.
    pub fn send_dos(&mut self, to: WorkerId, msg: crate::proto::dos::DosMsg) {
        self.push(to, CrossItem::Dos(msg));
    }

    /// Send `msg` to every other worker.
    pub fn broadcast_dos(&mut self, msg: crate::proto::dos::DosMsg) {
        self.broadcast(|| CrossItem::Dos(msg));
    }

    /// The DoS messages taken in since the last call.
    pub fn take_dos(&mut self) -> Vec<crate::proto::dos::DosMsg> {
        std::mem::take(&mut self.dos_in)
    }

    fn broadcast(&mut self, item: impl Fn() -> CrossItem) {
        for (i, o) in self.outbox.iter_mut().enumerate() {
            if i != self.me.0 {
                o.push(item());
            }
        }
    }

    /// One of our channels finished its handshake: tell the other workers
    /// if it leads to a relay.
    pub fn local_channel_opened(&mut self, chan: ChanId, peer: &PeerKind) {
        if let PeerKind::Relay { rsa_id, ed_id } = *peer {
            self.announced.insert(chan, rsa_id);
            self.broadcast(|| CrossItem::ChanUp {
                chan,
                rsa_id,
                ed_id,
            });
        }
    }

    /// One of our channels closed: its hosted circuits are gone (the table
    /// forgets their reservations in `channel_closed`), and the owners
    /// learn it with the announcement.
    pub fn local_channel_closed(&mut self, chan: ChanId) {
        if let Some(circs) = self.hosted.remove(&chan) {
            for (owner, vcirc) in circs.into_values() {
                self.hosted_ids.remove(&(owner, chan, vcirc));
            }
        }
        if self.announced.remove(&chan).is_some() {
            self.broadcast(|| CrossItem::ChanDown { chan });
        }
    }

    /// A virtual channel standing for another worker's open channel to
    /// this relay (matching the Ed25519 identity too when the EXTEND2 gave
    /// one), made on first use with an id from `alloc` and registered with
    /// `table`. `None` when no other worker has one.
    pub fn virtual_chan_to(
        &mut self,
        rsa_id: &[u8; 20],
        ed_id: Option<&[u8; 32]>,
        table: &mut CircuitTable,
        alloc: impl FnOnce() -> ChanId,
    ) -> Option<(ChanId, WorkerId)> {
        let r = *self
            .directory
            .get(rsa_id)?
            .iter()
            .find(|r| ed_id.is_none_or(|e| *e == r.ed_id))?;
        if let Some(v) = self.virtual_of.get(&(r.worker, r.chan)) {
            return Some((*v, r.worker));
        }
        let v = alloc();
        self.virtual_chans.insert(v, (r.worker, r.chan));
        self.virtual_of.insert((r.worker, r.chan), v);
        // Circuits on it are numbered by our table; the holder maps them
        // to IDs on its real channel.
        table.channel_opened_outbound(
            v,
            PeerKind::Relay {
                rsa_id: *rsa_id,
                ed_id: r.ed_id,
            },
        );
        Some((v, r.worker))
    }

    /// Whether `chan` is one of our virtual channels.
    pub fn is_virtual(&self, chan: ChanId) -> bool {
        self.virtual_chans.contains_key(&chan)
    }

    /// Owner side: a cell our table sent on a virtual channel. Returns
    /// `false` when `chan` is not virtual.
    pub fn send_forward(
        &mut self,
        chan: ChanId,
        vcirc: CircId,
        cmd: ChanCmd,
        body: [u8; CELL_BODY_LEN],
    ) -> bool {
        let Some(&(worker, real)) = self.virtual_chans.get(&chan) else {
            return false;
        };
        self.push_cell(
            worker,
            Flow::Forward { chan, vcirc },
            CrossItem::Forward {
                chan: real,
                vcirc,
                cmd,
                body,
            },
        );
        true
    }

    /// Holder side: take the cells that arrived on `chan` for hosted
    /// circuits out of `cells` and queue them for their owners. Cheap when
    /// `chan` hosts nothing.
    pub fn take_hosted(
        &mut self,
        chan: ChanId,
        cells: &mut Vec<IncomingCell>,
        table: &mut CircuitTable,
    ) {
        let Some(circs) = self.hosted.get(&chan) else {
            return;
        };
        let outbox = &mut self.outbox;
        let ledgers = &mut self.ledgers;
        let mut destroyed = Vec::new();
        // `retain` moves nothing before the first hosted cell.
        cells.retain(|c| {
            let Some(&(owner, vcirc)) = circs.get(&c.circ_id) else {
                return true;
            };
            if c.cmd == ChanCmd::DESTROY {
                destroyed.push(c.circ_id);
            }
            if let Some(o) = outbox.get_mut(owner.0) {
                o.push(CrossItem::Backward {
                    chan,
                    vcirc,
                    cmd: c.cmd,
                    body: c.body,
                });
                let flow = Flow::Backward {
                    chan,
                    circ_id: c.circ_id,
                };
                count_flow(ledgers, owner, flow);
            }
            false
        });
        for id in destroyed {
            self.unhost(chan, id, table);
        }
    }

    fn unhost(&mut self, chan: ChanId, circ_id: CircId, table: &mut CircuitTable) {
        let Some(circs) = self.hosted.get_mut(&chan) else {
            return;
        };
        let Some((owner, vcirc)) = circs.remove(&circ_id) else {
            return;
        };
        if circs.is_empty() {
            self.hosted.remove(&chan);
        }
        self.hosted_ids.remove(&(owner, chan, vcirc));
        table.release_circ_id(chan, circ_id);
    }

    /// Holder side: conflux leg `h` left our table for the set that
    /// worker `h.to` holds (see the module documentation). We host its
    /// circuit ID on our channel, under a number of our choosing for the
    /// owner, and send it over. The table reserved the ID already.
    pub fn host_moved_leg(
        &mut self,
        h: LegHandoff,
        table: &mut CircuitTable,
        rng: &mut impl CryptoRng,
        send: &mut Vec<HostedCell>,
    ) {
        let (chan, circ_id) = h.origin();
        let owner = WorkerId(h.to);
        // High bit clear: owners number their own circuits here with it set.
        let vcirc = (0..64)
            .map(|_| CircId::new(rng.next_u32() & 0x7fff_ffff))
            .find(|v| !v.is_channel() && !self.hosted_ids.contains_key(&(owner, chan, *v)));
        let Some(vcirc) = vcirc.filter(|_| owner != self.me && owner.0 < self.outbox.len()) else {
            table.release_circ_id(chan, circ_id);
            let body = destroy_body(DestroyReason::INTERNAL);
            send.push(HostedCell {
                chan,
                circ_id,
                cmd: ChanCmd::DESTROY,
                body,
            });
            return;
        };
        self.hosted
            .entry(chan)
            .or_default()
            .insert(circ_id, (owner, vcirc));
        self.hosted_ids.insert((owner, chan, vcirc), circ_id);
        self.push(
            owner,
            CrossItem::AdoptLeg {
                chan,
                vcirc,
                leg: Box::new(h),
            },
        );
    }

    /// Owner side: the virtual channel for worker `from`'s channel `chan`,
    /// made (with an id from `alloc`) and registered with `table` as a
    /// channel to `peer` if we have none yet.
    fn virtual_chan_for(
        &mut self,
        from: WorkerId,
        chan: ChanId,
        peer: PeerKind,
        table: &mut CircuitTable,
        alloc: &mut dyn FnMut() -> ChanId,
    ) -> Option<ChanId> {
        if let Some(v) = self.virtual_of.get(&(from, chan)) {
            return Some(*v);
        }
        let v = (0..64)
            .map(|_| alloc())
            .find(|v| !self.virtual_chans.contains_key(v))?;
        self.virtual_chans.insert(v, (from, chan));
        self.virtual_of.insert((from, chan), v);
        table.channel_opened_outbound(v, peer);
        Some(v)
    }

    /// Take in what another worker sent. Cells for our channels go to
    /// `send`; cells for our circuits go through `table`. `alloc` gives
    /// ids for new virtual channels.
    #[allow(clippy::too_many_arguments)]
    pub fn handle_batch(
        &mut self,
        batch: Batch,
        table: &mut CircuitTable,
        now: std::time::Instant,
        rng: &mut impl CryptoRng,
        send: &mut Vec<HostedCell>,
        alloc: &mut dyn FnMut() -> ChanId,
    ) {
        let from = batch.from;
        let mut incoming = std::mem::take(&mut self.scratch);
        incoming.clear();
        let mut incoming_chan = None;
        for item in batch.items {
            // Backward cells of one virtual channel are fed to the table as
            // one group, as cells read from a socket would be.
            if !item.is_backward()
                && let Some(v) = incoming_chan.take()
            {
                table.handle_cells(v, &mut incoming, now, rng);
                incoming.clear();
            }
            match item {
                CrossItem::ChanUp {
                    chan,
                    rsa_id,
                    ed_id,
                } => {
                    self.forget(from, chan);
                    self.directory.entry(rsa_id).or_default().push(RemoteChan {
                        worker: from,
                        chan,
                        ed_id,
                    });
                    self.directory_ids.insert((from, chan), rsa_id);
                }
                CrossItem::ChanDown { chan } => self.remote_closed(from, chan, table),
                CrossItem::Forward {
                    chan,
                    vcirc,
                    cmd,
                    body,
                } => self.forward_in(from, chan, vcirc, cmd, body, table, rng, send),
                CrossItem::Failed {
                    chan,
                    vcirc,
                    reason,
                } => {
                    if let Some(&v) = self.virtual_of.get(&(from, chan)) {
                        table.next_hop_failed(v, vcirc, reason);
                    }
                }
                CrossItem::Dos(m) => self.dos_in.push(m),
                CrossItem::AdoptLeg { chan, vcirc, leg } => {
                    match self.virtual_chan_for(from, chan, leg.peer, table, alloc) {
                        Some(v) => table.adopt_leg(v, vcirc, *leg, now, rng),
                        // Out of channel ids: the holder ends the leg, as
                        // for any DESTROY an owner sends.
                        None => {
                            let body = destroy_body(DestroyReason::RESOURCELIMIT);
                            let cmd = ChanCmd::DESTROY;
                            self.push(
                                from,
                                CrossItem::Forward {
                                    chan,
                                    vcirc,
                                    cmd,
                                    body,
                                },
                            );
                        }
                    }
                }
                CrossItem::Backward {
                    chan,
                    vcirc,
                    cmd,
                    body,
                } => {
                    let Some(&v) = self.virtual_of.get(&(from, chan)) else {
                        continue; // the channel is gone for us already
                    };
                    if let Some(prev) = incoming_chan
                        && prev != v
                    {
                        table.handle_cells(prev, &mut incoming, now, rng);
                        incoming.clear();
                    }
                    incoming_chan = Some(v);
                    incoming.push(IncomingCell {
                        circ_id: vcirc,
                        cmd,
                        body,
                    });
                }
            }
        }
        if let Some(v) = incoming_chan {
            table.handle_cells(v, &mut incoming, now, rng);
        }
        incoming.clear();
        self.scratch = incoming;
    }

    /// Holder side: a cell an owner wants on our channel `chan`.
    #[allow(clippy::too_many_arguments)]
    fn forward_in(
        &mut self,
        from: WorkerId,
        chan: ChanId,
        vcirc: CircId,
        cmd: ChanCmd,
        body: [u8; CELL_BODY_LEN],
        table: &mut CircuitTable,
        rng: &mut impl CryptoRng,
        send: &mut Vec<HostedCell>,
    ) {
        if let Some(&circ_id) = self.hosted_ids.get(&(from, chan, vcirc)) {
            if cmd == ChanCmd::DESTROY {
                self.unhost(chan, circ_id, table);
            }
            send.push(HostedCell {
                chan,
                circ_id,
                cmd,
                body,
            });
            return;
        }
        if cmd != ChanCmd::CREATE2 {
            // A late cell of a splice that already ended.
            return;
        }
        if !table.is_relay_channel(chan) {
            // The owner's copy of the directory is behind: the channel is
            // gone, so its circuits on it are too.
            self.push(from, CrossItem::ChanDown { chan });
            return;
        }
        let Some(circ_id) = table.reserve_circ_id(chan, rng) else {
            // As for a local extend (circuit_n_chan_done).
            self.push(
                from,
                CrossItem::Failed {
                    chan,
                    vcirc,
                    reason: DestroyReason::RESOURCELIMIT,
                },
            );
            return;
        };
        self.hosted
            .entry(chan)
            .or_default()
            .insert(circ_id, (from, vcirc));
        self.hosted_ids.insert((from, chan, vcirc), circ_id);
        send.push(HostedCell {
            chan,
            circ_id,
            cmd,
            body,
        });
    }

    /// Owner side: worker `from`'s channel `chan` is gone.
    fn remote_closed(&mut self, from: WorkerId, chan: ChanId, table: &mut CircuitTable) {
        self.forget(from, chan);
        if let Some(v) = self.virtual_of.remove(&(from, chan)) {
            self.virtual_chans.remove(&v);
            table.channel_closed(v);
        }
    }

    /// Drop worker `from`'s channel `chan` from the directory.
    fn forget(&mut self, from: WorkerId, chan: ChanId) {
        if let Some(rsa) = self.directory_ids.remove(&(from, chan))
            && let Some(v) = self.directory.get_mut(&rsa)
        {
            v.retain(|r| !(r.worker == from && r.chan == chan));
            if v.is_empty() {
                self.directory.remove(&rsa);
            }
        }
    }

    /// What to send each worker now; leaves the outboxes empty. Circuits
    /// whose cells in flight pass the limit with this batch are noted for
    /// [`Self::take_over_cap`].
    pub fn take_outboxes(&mut self) -> impl Iterator<Item = (WorkerId, Vec<CrossItem>)> + '_ {
        let cap = self.flow_cap;
        let over_cap = &mut self.over_cap;
        self.outbox
            .iter_mut()
            .zip(self.ledgers.iter_mut())
            .enumerate()
            .filter(|(_, (o, _))| !o.is_empty())
            .map(move |(i, (o, l))| {
                let counts = std::mem::take(&mut l.current);
                for (flow, c) in &counts {
                    let n = l.outstanding.entry(*flow).or_insert(0);
                    let before = *n;
                    *n += c;
                    if before <= cap && *n > cap {
                        over_cap.push((WorkerId(i), *flow));
                    }
                }
                l.sent_items += o.len();
                l.sent.push_back((o.len(), counts));
                (WorkerId(i), std::mem::take(o))
            })
    }

    /// The queue to worker `to` is over [`CROSS_QUEUE_LIMIT`]: end every
    /// splice between us with RESOURCELIMIT. Our circuits over its
    /// channels are closed both ways; its circuits over ours get DESTROY
    /// toward the next hop (queued in `send`) and `Failed` toward it.
    /// Returns how many circuits were cut.
    pub fn cut_off(
        &mut self,
        to: WorkerId,
        table: &mut CircuitTable,
        send: &mut Vec<HostedCell>,
    ) -> usize {
        let reason = DestroyReason::RESOURCELIMIT;
        let mut cut = 0;
        let mut ours: Vec<ChanId> = self
            .virtual_of
            .iter()
            .filter(|((w, _), _)| *w == to)
            .map(|(_, v)| *v)
            .collect();
        ours.sort_unstable();
        for v in ours {
            cut += table.close_circuits_on(v, reason);
        }
        let mut theirs: Vec<(ChanId, CircId, CircId)> = self
            .hosted
            .iter()
            .flat_map(|(chan, circs)| {
                circs
                    .iter()
                    .filter(|(_, (owner, _))| *owner == to)
                    .map(|(id, (_, vcirc))| (*chan, *id, *vcirc))
            })
            .collect();
        theirs.sort_unstable();
        for (chan, circ_id, _) in theirs {
            if self.fail_hosted(chan, circ_id, reason, table, send) {
                cut += 1;
            }
        }
        cut
    }

    /// Holder side: end the hosted circuit `circ_id` on our channel `chan`
    /// (its queue there is too long, or its owner too slow): DESTROY
    /// `reason` toward the next hop (into `send`) and `Failed` to the
    /// owner. `false` if we host no such circuit.
    pub fn fail_hosted(
        &mut self,
        chan: ChanId,
        circ_id: CircId,
        reason: DestroyReason,
        table: &mut CircuitTable,
        send: &mut Vec<HostedCell>,
    ) -> bool {
        let Some(&(owner, vcirc)) = self.hosted.get(&chan).and_then(|c| c.get(&circ_id)) else {
            return false;
        };
        self.unhost(chan, circ_id, table);
        let body = destroy_body(reason);
        send.push(HostedCell {
            chan,
            circ_id,
            cmd: ChanCmd::DESTROY,
            body,
        });
        self.push(
            owner,
            CrossItem::Failed {
                chan,
                vcirc,
                reason,
            },
        );
        true
    }

    /// Spliced circuits this worker hosts (for logs and tests).
    pub fn hosted_count(&self) -> usize {
        self.hosted.values().map(HashMap::len).sum()
    }
}

#[cfg(test)]
mod tests;
