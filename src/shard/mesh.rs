//! The shards' mesh: one bounded glommio shared channel for each ordered pair of shards.
//!
//! All channels are made on the main thread before any shard starts ([`build`]), and each
//! shard is handed its own ends ([`MeshEnds`]). A shard then only *connects* them
//! ([`MeshEnds::connect`]): glommio completes a connect once the peer has connected its end,
//! and an executor with a pending connect polls it on every loop instead of sleeping, so no
//! step of start-up waits for a wake-up from another thread.
//!
//! glommio's own `MeshBuilder::join` (used before) also has the shards register with each
//! other through a notification channel, with a sleeping executor woken from another thread.
//! A broker hung there about once in 200 starts on a loaded 2-core machine: both shard
//! executors asleep in io_uring, start-up stuck in "joining the mesh" (seen in CI and
//! reproduced by starting a broker in a loop with builds running; the lost wake-up itself was
//! not found). This module has no such step.

use glommio::channels::shared_channel::{
    self, ConnectedReceiver, ConnectedSender, SharedReceiver, SharedSender,
};

use super::ShardMsg;

/// Messages that can wait in one shard-to-shard channel before its sender waits for room.
pub const MESH_CHANNEL_CAPACITY_MESSAGES: usize = 1024;

/// One shard's unconnected ends of the mesh: a sender to and a receiver from every other
/// shard (`None` at the shard's own index).
pub struct MeshEnds {
    senders: Vec<Option<SharedSender<ShardMsg>>>,
    receivers: Vec<Option<SharedReceiver<ShardMsg>>>,
}

/// Makes the channels of a full mesh of `nr` shards; element `i` holds shard `i`'s ends.
pub fn build(nr: usize) -> Vec<MeshEnds> {
    let mut ends: Vec<MeshEnds> = (0..nr)
        .map(|_| MeshEnds {
            senders: (0..nr).map(|_| None).collect(),
            receivers: (0..nr).map(|_| None).collect(),
        })
        .collect();
    for from in 0..nr {
        for to in 0..nr {
            if from != to {
                let (tx, rx) = shared_channel::new_bounded(MESH_CHANNEL_CAPACITY_MESSAGES);
                ends[from].senders[to] = Some(tx);
                ends[to].receivers[from] = Some(rx);
            }
        }
    }
    ends
}

impl MeshEnds {
    /// Connects every end on the calling shard's executor; returns once every peer shard has
    /// connected its ends too. The connects are all spawned before any is awaited: awaiting
    /// them one by one could wait on a peer that waits on us.
    pub async fn connect(
        self,
    ) -> Result<(MeshSenders, Vec<(usize, ConnectedReceiver<ShardMsg>)>), String> {
        let senders: Vec<_> = self
            .senders
            .into_iter()
            .map(|s| s.map(|s| glommio::spawn_local(s.connect()).detach()))
            .collect();
        let receivers: Vec<_> = self
            .receivers
            .into_iter()
            .map(|r| r.map(|r| glommio::spawn_local(r.connect()).detach()))
            .collect();
        let mut connected_senders = Vec::with_capacity(senders.len());
        for (peer, s) in senders.into_iter().enumerate() {
            connected_senders.push(match s {
                Some(task) => Some(
                    task.await
                        .ok_or_else(|| format!("mesh: connecting to shard {peer} was cancelled"))?,
                ),
                None => None,
            });
        }
        let mut connected_receivers = Vec::with_capacity(receivers.len());
        for (peer, r) in receivers.into_iter().enumerate() {
            if let Some(task) = r {
                let rx = task
                    .await
                    .ok_or_else(|| format!("mesh: connecting from shard {peer} was cancelled"))?;
                connected_receivers.push((peer, rx));
            }
        }
        Ok((
            MeshSenders {
                senders: connected_senders,
            },
            connected_receivers,
        ))
    }
}

/// A shard's connected senders to every other shard.
pub struct MeshSenders {
    senders: Vec<Option<ConnectedSender<ShardMsg>>>,
}

impl MeshSenders {
    /// Sends `msg` to shard `to`, waiting for room in the channel. Fails (dropping the
    /// message) when the peer has stopped, or when `to` is this shard or out of range.
    pub async fn send_to(&self, to: usize, msg: ShardMsg) -> Result<(), &'static str> {
        match self.senders.get(to) {
            Some(Some(sender)) => sender.send(msg).await.map_err(|_| "peer shard stopped"),
            _ => Err("no mesh channel to that shard"),
        }
    }
}
