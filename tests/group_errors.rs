//! The group coordinator's error answers on raw requests: every wrong input gets Kafka's error
//! code at once, never a hang.

mod common;

use std::net::TcpStream;
use std::time::Duration;

use common::{request, Broker};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    ApiKey, GroupId, HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse,
    LeaveGroupRequest, LeaveGroupResponse, OffsetCommitRequest, OffsetCommitResponse,
    SyncGroupRequest, SyncGroupResponse, TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};

const UNKNOWN_MEMBER_ID: i16 = 25;
const ILLEGAL_GENERATION: i16 = 22;
const INVALID_SESSION_TIMEOUT: i16 = 26;
const MEMBER_ID_REQUIRED: i16 = 79;
const REBALANCE_IN_PROGRESS: i16 = 27;
const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
const INVALID_GROUP_ID: i16 = 24;
const FENCED_INSTANCE_ID: i16 = 82;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn join_req(group: &str, member: &str, session_ms: i32, protocol: &str) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_session_timeout_ms(session_ms)
        .with_rebalance_timeout_ms(10_000)
        .with_member_id(s(member))
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(s(protocol))
            .with_metadata(bytes::Bytes::from_static(b"meta"))])
}

fn join(c: &mut TcpStream, req: &JoinGroupRequest) -> JoinGroupResponse {
    let mut b = request(c, ApiKey::JoinGroup, 9, req);
    JoinGroupResponse::decode(&mut b, 9).expect("join response")
}

fn heartbeat(c: &mut TcpStream, group: &str, member: &str, generation: i32) -> i16 {
    let req = HeartbeatRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_member_id(s(member))
        .with_generation_id(generation);
    let mut b = request(c, ApiKey::Heartbeat, 4, &req);
    HeartbeatResponse::decode(&mut b, 4)
        .expect("heartbeat")
        .error_code
}

/// Commits offset 5 of `__consumer_offsets` partition 0 (OffsetCommit v8) and returns its code.
fn commit(
    c: &mut TcpStream,
    group: &str,
    member: &str,
    generation: i32,
    instance: Option<&str>,
) -> i16 {
    let req = OffsetCommitRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(s(member))
        .with_group_instance_id(instance.map(s))
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(s("__consumer_offsets")))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(5)])]);
    let mut resp = request(c, ApiKey::OffsetCommit, 8, &req);
    let resp = OffsetCommitResponse::decode(&mut resp, 8).expect("commit");
    resp.topics[0].partitions[0].error_code
}

fn connect(b: &Broker) -> TcpStream {
    let c = TcpStream::connect(("127.0.0.1", b.port)).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    c
}

#[test]
fn wrong_inputs_get_kafka_error_codes() {
    let b = Broker::start(
        2,
        &[
            "group.initial.rebalance.delay.ms=0",
            "log.preallocate.bytes=1048576",
        ],
    );
    let mut c = connect(&b);

    assert_eq!(
        join(&mut c, &join_req("", "", 10_000, "range")).error_code,
        INVALID_GROUP_ID
    );
    assert_eq!(
        join(&mut c, &join_req("g", "", 10, "range")).error_code,
        INVALID_SESSION_TIMEOUT
    );
    assert_eq!(
        join(&mut c, &join_req("g", "nobody", 10_000, "range")).error_code,
        UNKNOWN_MEMBER_ID
    );

    // KIP-394: the first join gets a member id to come back with.
    let first = join(&mut c, &join_req("g", "", 10_000, "range"));
    assert_eq!(first.error_code, MEMBER_ID_REQUIRED);
    let member = first.member_id.to_string();
    assert!(!member.is_empty());
    let joined = join(&mut c, &join_req("g", &member, 10_000, "range"));
    assert_eq!(joined.error_code, 0);
    assert_eq!(joined.leader.as_str(), member, "the only member leads");
    let generation = joined.generation_id;

    // Sync with a wrong generation, then properly.
    let sync = |c: &mut TcpStream, generation: i32, member: &str| {
        let req = SyncGroupRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_generation_id(generation)
            .with_member_id(s(member))
            .with_assignments(vec![
                kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment::default()
                    .with_member_id(s(member))
                    .with_assignment(bytes::Bytes::from_static(b"assignment")),
            ]);
        let mut b = request(c, ApiKey::SyncGroup, 5, &req);
        SyncGroupResponse::decode(&mut b, 5).expect("sync")
    };
    assert_eq!(
        sync(&mut c, generation + 7, &member).error_code,
        ILLEGAL_GENERATION
    );
    assert_eq!(
        sync(&mut c, generation, "stranger").error_code,
        UNKNOWN_MEMBER_ID
    );
    let synced = sync(&mut c, generation, &member);
    assert_eq!(synced.error_code, 0);
    assert_eq!(&synced.assignment[..], b"assignment");

    assert_eq!(heartbeat(&mut c, "g", &member, generation), 0);
    assert_eq!(
        heartbeat(&mut c, "g", &member, generation + 1),
        ILLEGAL_GENERATION
    );
    assert_eq!(
        heartbeat(&mut c, "g", "stranger", generation),
        UNKNOWN_MEMBER_ID
    );
    assert_eq!(
        heartbeat(&mut c, "no-such-group", &member, generation),
        UNKNOWN_MEMBER_ID
    );

    // A member with an incompatible protocol cannot join.
    let mut other = connect(&b);
    let first = join(&mut other, &join_req("g", "", 10_000, "other-assignor"));
    assert_eq!(first.error_code, INCONSISTENT_GROUP_PROTOCOL);

    // A second compatible member starts a rebalance: the first member's heartbeat says so.
    let first = join(&mut other, &join_req("g", "", 10_000, "range"));
    assert_eq!(first.error_code, MEMBER_ID_REQUIRED);
    let second = first.member_id.to_string();
    let waiting = std::thread::spawn({
        let mut other = other.try_clone().expect("clone");
        move || join(&mut other, &join_req("g", &second, 10_000, "range"))
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        heartbeat(&mut c, "g", &member, generation),
        REBALANCE_IN_PROGRESS
    );

    // Kafka's rule: a member of the current generation may commit while the group prepares
    // the rebalance (consumers commit in their revoke callbacks exactly then); a stale
    // generation may not.
    assert_eq!(commit(&mut c, "g", &member, generation, None), 0);
    assert_eq!(
        commit(&mut c, "g", &member, generation - 1, None),
        ILLEGAL_GENERATION
    );

    // The first member rejoins; both get the new generation.
    let rejoined = join(&mut c, &join_req("g", &member, 10_000, "range"));
    let other_join = waiting.join().expect("thread");
    assert_eq!(rejoined.error_code, 0);
    assert_eq!(other_join.error_code, 0);
    assert_eq!(rejoined.generation_id, generation + 1);
    assert_eq!(other_join.generation_id, generation + 1);
    let generation = generation + 1;
    let second = other_join.member_id.to_string();

    // Between the join and sync phases (CompletingRebalance) a commit is refused: the
    // member's assignment may be about to change.
    assert_eq!(
        commit(&mut c, "g", &member, generation, None),
        REBALANCE_IN_PROGRESS
    );

    // Kafka's rule: a member that rejoins with the same protocols while the group waits for
    // the leader's SyncGroup (it may have missed its answer) gets the current generation
    // back; no new rebalance starts.
    let again = join(&mut other, &join_req("g", &second, 10_000, "range"));
    assert_eq!(again.error_code, 0);
    assert_eq!(again.generation_id, generation);
    assert_eq!(heartbeat(&mut c, "g", &member, generation), 0);

    // Once stable, the leader rejoining asks for a new assignment: a rebalance starts.
    let synced = sync(&mut c, generation, &member);
    assert_eq!(synced.error_code, 0);
    let waiting = std::thread::spawn({
        let mut c = c.try_clone().expect("clone");
        move || join(&mut c, &join_req("g", &member, 10_000, "range"))
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        heartbeat(&mut other, "g", &second, generation),
        REBALANCE_IN_PROGRESS
    );
    let follower = join(&mut other, &join_req("g", &second, 10_000, "range"));
    let leader = waiting.join().expect("thread");
    assert_eq!((leader.error_code, follower.error_code), (0, 0));
    assert_eq!(leader.generation_id, generation + 1);
}

/// KIP-345 fencing: a second process joining with a `group.instance.id` in use replaces the
/// member, and every later request of the old one (heartbeat, sync, commit, join, leave)
/// gets FENCED_INSTANCE_ID, as from Kafka; the new member carries on.
#[test]
fn a_replaced_static_member_is_fenced() {
    let mut b = Broker::start(
        1,
        &[
            "group.initial.rebalance.delay.ms=0",
            "log.preallocate.bytes=1048576",
        ],
    );
    let mut c = connect(&b);
    let static_join = |c: &mut TcpStream, member: &str| {
        join(
            c,
            &join_req("sg", member, 10_000, "range").with_group_instance_id(Some(s("instance-1"))),
        )
    };
    let sync = |c: &mut TcpStream, member: &str, generation: i32| {
        let req = SyncGroupRequest::default()
            .with_group_id(GroupId(s("sg")))
            .with_generation_id(generation)
            .with_member_id(s(member))
            .with_group_instance_id(Some(s("instance-1")))
            .with_assignments(vec![
                kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment::default()
                    .with_member_id(s(member))
                    .with_assignment(bytes::Bytes::from_static(b"assignment")),
            ]);
        let mut b = request(c, ApiKey::SyncGroup, 5, &req);
        SyncGroupResponse::decode(&mut b, 5)
            .expect("sync")
            .error_code
    };
    let static_heartbeat = |c: &mut TcpStream, member: &str, generation: i32| {
        let req = HeartbeatRequest::default()
            .with_group_id(GroupId(s("sg")))
            .with_member_id(s(member))
            .with_generation_id(generation)
            .with_group_instance_id(Some(s("instance-1")));
        let mut b = request(c, ApiKey::Heartbeat, 4, &req);
        HeartbeatResponse::decode(&mut b, 4)
            .expect("heartbeat")
            .error_code
    };

    // A static member joins at once (no MEMBER_ID_REQUIRED round) and leads.
    let first = static_join(&mut c, "");
    assert_eq!(first.error_code, 0);
    let old = first.member_id.to_string();
    let generation = first.generation_id;
    assert_eq!(sync(&mut c, &old, generation), 0);
    assert_eq!(static_heartbeat(&mut c, &old, generation), 0);

    // A second process with the same instance id: it takes the member's place, same
    // generation (same protocols, stable group: no rebalance).
    let mut c2 = connect(&b);
    let second = static_join(&mut c2, "");
    assert_eq!(second.error_code, 0);
    let new = second.member_id.to_string();
    assert_ne!(new, old);
    assert_eq!(second.generation_id, generation);

    // The old one is fenced on every request; the new one is not.
    assert_eq!(
        static_heartbeat(&mut c, &old, generation),
        FENCED_INSTANCE_ID
    );
    assert_eq!(sync(&mut c, &old, generation), FENCED_INSTANCE_ID);
    assert_eq!(
        commit(&mut c, "sg", &old, generation, Some("instance-1")),
        FENCED_INSTANCE_ID
    );
    assert_eq!(static_join(&mut c, &old).error_code, FENCED_INSTANCE_ID);
    let leave = LeaveGroupRequest::default()
        .with_group_id(GroupId(s("sg")))
        .with_members(vec![MemberIdentity::default()
            .with_member_id(s(&old))
            .with_group_instance_id(Some(s("instance-1")))]);
    let mut resp = request(&mut c, ApiKey::LeaveGroup, 4, &leave);
    let resp = LeaveGroupResponse::decode(&mut resp, 4).expect("leave");
    assert_eq!(resp.members[0].error_code, FENCED_INSTANCE_ID);

    assert_eq!(sync(&mut c2, &new, generation), 0);
    assert_eq!(static_heartbeat(&mut c2, &new, generation), 0);
    assert_eq!(
        commit(&mut c2, "sg", &new, generation, Some("instance-1")),
        0
    );

    // The replacement was persisted (Kafka writes the group with the new member id): after
    // a restart the new member is still the member and the old one still fenced.
    drop((c, c2));
    b.stop();
    b.restart();
    let mut c = connect(&b);
    assert_eq!(static_heartbeat(&mut c, &new, generation), 0);
    assert_eq!(
        static_heartbeat(&mut c, &old, generation),
        FENCED_INSTANCE_ID
    );
}
