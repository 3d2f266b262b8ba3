//! The cluster's shared state in Redis, for hubs with `History`, `Presence` or `JoinLeave`
//! (`docs/PROTOCOL.md`, "History, recovery and presence").
//!
//! ## Keys
//! Per channel of a hub, beside its topic `{Prefix}:{hub}:c:{channel}`:
//! `…:o:{channel}` the last offset, `…:e:{channel}` the epoch, `…:h:{channel}` the kept
//! events (a list, oldest first), all three expiring `TtlMs` after the last broadcast; and
//! `…:p:{channel}`, the presence hash (token → node id and user). Per node,
//! `{Prefix}:node:{id}` indexes the node's presence entries (so that another node can remove
//! them and send their leaves when it dies): field = token (32 hex digits) then the presence
//! key, value = the leave event (JSON: no raw NUL), NUL, then the channel's topic; channel
//! names may hold any character, NUL included, so they come last. `{Prefix}:nodes` holds
//! every node's last heartbeat, each node receives its markers on its own Redis channel
//! `{Prefix}:m:{id}`, and `{Prefix}:sent:{id}` holds the number of the last accepted History
//! broadcast Redis carried out for the node (against carrying one out twice when it is
//! sent again after a broken link). Hub paths begin with `/`, so these names cannot meet a hub's.
//!
//! ## Everything in order, through the channel's topic
//! Each change is one Lua script, atomic in Redis, that also PUBLISHes on the channel's
//! topic, so every node sees the channel's events, joins, leaves and markers in one order.
//! A join or leave goes as `+`, the client's token (32 hex digits), then the event: every
//! node delivers it to its subscribers but that client (nobody hears of itself).
//! - [`APPEND`]: a broadcast takes the next offset, is kept, and is published *to every
//!   node, its own included* (the message starts with `*`); nothing is kept and the offset
//!   is not taken when no node holds the channel.
//! - [`JOIN`]: a subscribe records presence, publishes the join, reads the channel's
//!   position and the events to recover, and publishes a *marker* (`!`, the join's number,
//!   then the reply's data) on the node's own marker channel. Redis runs one script at a
//!   time and hands a connection its messages in that order, whatever their channels, so
//!   the marker arrives in its place among the channel's messages. The node makes the client
//!   a subscriber then: it receives exactly the events after the position it was told, and
//!   the joins and leaves after its own.
//! - [`LEAVE`]: removes a presence entry and, if it was there, publishes the leave.
//! - [`BEAT`]: every second a node records its heartbeat and reaps the nodes silent for
//!   [`DEAD_AFTER`]: their presence entries go and their leaves are published. It reaps only
//!   once it has itself beaten without a break for [`DEAD_AFTER`]: after Redis (or the node)
//!   stalled, every node gets that long to beat again before any is taken for dead.
//! - [`SYNC`] and [`REJOIN`]: after each (re)connection, and when a node finds itself
//!   missing from `nodes` (the store restarted, or took it for dead), it removes its
//!   entries that no longer stand (sending their leaves: those asked for while Redis was
//!   away were lost) and writes the others again; with joins if it had been taken for dead
//!   (its tombstone says so), since their leaves were sent.

use std::time::Duration;

use rocket_proto::{Joined, Payload, Token};

/// A node whose heartbeat is older than this is dead: its presence entries are removed and
/// its leaves sent (the protocol's bound for a killed node is 5 s).
pub(crate) const DEAD_AFTER: Duration = Duration::from_secs(3);
/// How often a node records its heartbeat (and reaps the dead).
pub(crate) const BEAT_EVERY: Duration = Duration::from_secs(1);
/// How long a reaped node's tombstone stays: a node back within it announces its
/// subscribers again with joins.
pub(crate) const TOMBSTONE_MS: u64 = 60_000;

/// KEYS: offset, epoch, events. ARGV: topic, event (a JSON object), size, ttl (ms), epoch
/// candidate, and for an accepted publication the node's `sent:` key and the publication's
/// number. Returns how many connections received the event (0: none, nothing kept), or -1
/// for a publication whose number is not above the node's last: it was carried out already
/// (its answer was lost with the link, and the node sent it again).
pub(crate) const APPEND: &str = r#"
if ARGV[6] then
  if tonumber(ARGV[7]) <= tonumber(redis.call('GET', ARGV[6]) or '0') then return -1 end
  redis.call('SET', ARGV[6], ARGV[7], 'PX', 86400000)
end
local n = redis.call('INCR', KEYS[1])
local e = redis.call('GET', KEYS[2])
local made = false
if not e then
  e = ARGV[5]
  made = true
  redis.call('SET', KEYS[2], e)
end
local ev = string.sub(ARGV[2], 1, -2) .. ',"offset":' .. string.format('%d', n) .. ',"epoch":"' .. e .. '"}'
local r = redis.call('PUBLISH', ARGV[1], '#' .. string.format('%d', n) .. '\0' .. e .. '\0' .. ev)
if r == 0 then
  if n == 1 then redis.call('DEL', KEYS[1]) else redis.call('DECR', KEYS[1]) end
  if made then redis.call('DEL', KEYS[2]) end
  return 0
end
redis.call('RPUSH', KEYS[3], ev)
redis.call('LTRIM', KEYS[3], -tonumber(ARGV[3]), -1)
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ARGV[4]) end
return r
"#;

/// KEYS: offset, epoch, events, presence, node index. ARGV: topic, marker channel, marker
/// head, history ('1'/'0'), ttl (ms), epoch candidate ('' to make none), since offset (''
/// for none), since epoch, token, presence value ('' for none), join event ('' for none),
/// index field, index value.
pub(crate) const JOIN: &str = r#"
if ARGV[10] ~= '' then
  redis.call('HSET', KEYS[4], ARGV[9], ARGV[10])
  redis.call('HSET', KEYS[5], ARGV[12], ARGV[13])
end
if ARGV[11] ~= '' then redis.call('PUBLISH', ARGV[1], '+' .. ARGV[9] .. ARGV[11]) end
local n, e, rec, evs = 0, '', '-', {}
if ARGV[4] == '1' then
  n = tonumber(redis.call('GET', KEYS[1]) or '0')
  e = redis.call('GET', KEYS[2])
  if not e then
    e = ARGV[6]
    if e ~= '' then redis.call('SET', KEYS[2], e, 'PX', ARGV[5]) end
  end
  if ARGV[7] ~= '' then
    rec = '0'
    local since = tonumber(ARGV[7])
    if ARGV[8] == e and since <= n then
      local missed = n - since
      if missed <= redis.call('LLEN', KEYS[3]) then
        rec = '1'
        if missed > 0 then evs = redis.call('LRANGE', KEYS[3], -missed, -1) end
      end
    end
  end
end
local parts = {string.format('%d', n), e, rec}
for _, ev in ipairs(evs) do parts[#parts + 1] = ev end
redis.call('PUBLISH', ARGV[2], ARGV[3] .. table.concat(parts, '\0'))
return 1
"#;

/// KEYS: presence, node index. ARGV: token, index field, topic, leave event ('' for none).
/// A leave is published only if the entry was there (not twice, not for a failed join).
pub(crate) const LEAVE: &str = r#"
redis.call('HDEL', KEYS[2], ARGV[2])
if redis.call('HDEL', KEYS[1], ARGV[1]) == 1 and ARGV[4] ~= '' then
  redis.call('PUBLISH', ARGV[3], '+' .. ARGV[1] .. ARGV[4])
end
return 1
"#;

/// KEYS: nodes, streaks. ARGV: this node, dead after (ms), node index prefix, tombstone
/// prefix, tombstone life (ms), beat period (ms). Returns whether this node was missing
/// (1/0), how many dead nodes it reaped, and whether this node had been reaped itself (1/0:
/// its subscribers' leaves were sent, so their entries come back with joins). A node reaps
/// only after beating without a break for the dead-after time itself: after a stall (of
/// Redis, or of this node) every node gets that long to beat again before any is reaped.
pub(crate) const BEAT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local after = tonumber(ARGV[2])
local prev = redis.call('ZSCORE', KEYS[1], ARGV[1])
local streak = redis.call('HGET', KEYS[2], ARGV[1])
if not prev or not streak or now - tonumber(prev) > 2 * tonumber(ARGV[6]) then
  streak = now
  redis.call('HSET', KEYS[2], ARGV[1], now)
end
local missing = redis.call('ZADD', KEYS[1], now, ARGV[1])
local reaped = 0
if now - tonumber(streak) >= after then
  for _, node in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - after)) do
    redis.call('ZREM', KEYS[1], node)
    redis.call('HDEL', KEYS[2], node)
    local index = ARGV[3] .. node
    local entries = redis.call('HGETALL', index)
    for i = 1, #entries, 2 do
      local f, v = entries[i], entries[i + 1]
      local b = string.find(v, '\0', 1, true)
      if b and redis.call('HDEL', string.sub(f, 33), string.sub(f, 1, 32)) == 1 and b > 1 then
        redis.call('PUBLISH', string.sub(v, b + 1), '+' .. string.sub(f, 1, 32) .. string.sub(v, 1, b - 1))
      end
    end
    redis.call('DEL', index)
    redis.call('SET', ARGV[4] .. node, '1', 'PX', ARGV[5])
    reaped = reaped + 1
  end
end
return {missing, reaped, redis.call('DEL', ARGV[4] .. ARGV[1])}
"#;

/// KEYS: node index. ARGV: the index fields of the entries that stand. Removes the others
/// (their presence entries, with their leaves) and returns how many.
pub(crate) const SYNC: &str = r#"
local keep = {}
for i = 1, #ARGV do keep[ARGV[i]] = true end
local entries = redis.call('HGETALL', KEYS[1])
local gone = 0
for i = 1, #entries, 2 do
  local f, v = entries[i], entries[i + 1]
  if not keep[f] then
    redis.call('HDEL', KEYS[1], f)
    local b = string.find(v, '\0', 1, true)
    if b and redis.call('HDEL', string.sub(f, 33), string.sub(f, 1, 32)) == 1 and b > 1 then
      redis.call('PUBLISH', string.sub(v, b + 1), '+' .. string.sub(f, 1, 32) .. string.sub(v, 1, b - 1))
    end
    gone = gone + 1
  end
end
return gone
"#;

/// KEYS: presence, node index. ARGV: token, presence value, index field, index value,
/// topic, join event ('' for none). Writes a local subscriber's entry again; publishes the
/// join if the entry was missing and a join is given.
pub(crate) const REJOIN: &str = r#"
redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
if redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) == 1 and ARGV[6] ~= '' then
  redis.call('PUBLISH', ARGV[5], '+' .. ARGV[1] .. ARGV[6])
end
return 1
"#;

/// KEYS: offset, epoch, events. ARGV: the first index to read (`0` for all, `-N` for the
/// last N; a string, so that no large number goes through Lua's floats). Returns the
/// offset, the epoch, then the events.
pub(crate) const HISTORY: &str = r#"
local out = {redis.call('GET', KEYS[1]) or '0', redis.call('GET', KEYS[2]) or ''}
for _, ev in ipairs(redis.call('LRANGE', KEYS[3], ARGV[1], -1)) do out[#out + 1] = ev end
return out
"#;

/// A History event's message (after its `#`): offset, NUL, epoch, NUL, the event.
pub(crate) fn parse_event(message: &[u8]) -> Option<(u64, &[u8], &[u8])> {
    let mut parts = message.splitn(3, |&b| b == 0);
    let offset = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    Some((offset, parts.next()?, parts.next()?))
}

/// A join's marker data (after its head): offset, epoch, recovery flag (`-` none, `0`
/// not recovered, `1` recovered) and the recovered events, separated by NUL (which JSON
/// text cannot hold).
pub(crate) fn parse_marker(data: &[u8]) -> Option<Joined> {
    let mut parts = data.split(|&b| b == 0);
    let offset = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    let epoch = String::from_utf8(parts.next()?.to_vec()).ok()?;
    let recovery = match parts.next()? {
        b"-" => None,
        b"0" => Some(None),
        b"1" => Some(Some(
            parts
                .map(|e| std::str::from_utf8(e).ok().map(Payload::text))
                .collect::<Option<Vec<_>>>()?,
        )),
        _ => return None,
    };
    Some(Joined::new(offset, epoch, recovery))
}

/// A presence hash's entries (token → node id, then user) as tokens and users.
pub(crate) fn parse_presence(entries: Vec<(Vec<u8>, Vec<u8>)>) -> Vec<(Token, String)> {
    let mut clients: Vec<(Token, String)> = entries
        .into_iter()
        .filter_map(|(token, value)| {
            let token = Token::parse(std::str::from_utf8(&token).ok()?)?;
            let user = value.get(super::NODE_ID_LEN..)?;
            Some((token, String::from_utf8(user.to_vec()).ok()?))
        })
        .collect();
    // The same answer on every node, whatever order the hash gives.
    clients.sort_unstable_by_key(|(token, _)| token.to_hex());
    clients
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_parse_back_to_the_reply_they_carry() {
        assert_eq!(
            parse_marker(b"0\0\0-"),
            Some(Joined::new(0, String::new(), None))
        );
        assert_eq!(
            parse_marker(b"18\0ep\x000"),
            Some(Joined::new(18, "ep".into(), Some(None)))
        );
        let j = parse_marker(b"18\0ep\x001\0{\"a\":1}\0{\"b\":\n2}").unwrap();
        let events = j.recovery.unwrap().unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[1].as_text(), Some("{\"b\":\n2}"));
        assert_eq!(
            parse_marker(b"18\0ep\x001"),
            Some(Joined::new(18, "ep".into(), Some(Some(Vec::new())))),
            "recovered, nothing missed"
        );
        for bad in [
            &b""[..],
            b"x\0e\0-",
            b"1\0e",
            b"1\0e\0?",
            b"1\0e\x001\0\xff",
        ] {
            assert_eq!(parse_marker(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn history_events_carry_offset_and_epoch_before_the_event() {
        assert_eq!(
            parse_event(b"18\0ep\0{\"a\":\"\\u0000\"}"),
            Some((18, &b"ep"[..], &b"{\"a\":\"\\u0000\"}"[..]))
        );
        for bad in [&b""[..], b"18", b"18\0ep", b"x\0ep\0{}"] {
            assert_eq!(parse_event(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn presence_entries_parse_and_sort_and_skip_what_is_not_an_entry() {
        let a = Token::from_bytes([0xaa; 16]);
        let b = Token::from_bytes([0x11; 16]);
        let entry = |t: &Token, user: &str| {
            let mut v = b"0123456789abcdef".to_vec();
            v.extend_from_slice(user.as_bytes());
            (t.to_hex().to_vec(), v)
        };
        let got = parse_presence(vec![
            entry(&a, "alice"),
            entry(&b, "bob"),
            (b"not-a-token".to_vec(), b"0123456789abcdefx".to_vec()),
            (a.to_hex().to_vec(), b"short".to_vec()),
        ]);
        assert_eq!(got, vec![(b, "bob".into()), (a, "alice".into())]);
    }
}
