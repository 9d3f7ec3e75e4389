"""A scripted MongoDB replica set for the mongodb tests: one MockupDB server per member, each on
a free port of 127.0.0.1, answering what lagbudget asks (hello, replSetGetStatus, find on
local.oplog.rs and on the heartbeat collection, update on the primary, ping) with documents
shaped as MongoDB 6/7 documents them. Not a database: every answer comes from the state below,
which the test sets.

Usage: mongodb_peer.py MEMBERS. Prints `ports P1 P2 ...` once every member listens, then reads
JSON lines on stdin, each merged into the state, and answers each with `ok` (or `error ...`):

    {"members": {"1": {"state": "RECOVERING"}}, "clock_ms": 1700000000000,
     "oplog": [{"ts": [secs, inc], "t": 1, "op": "i", "ns": "shop.orders", "wall_ms": ..., "o": {}}]}

- members.N: state (PRIMARY, SECONDARY, RECOVERING, ...), optime ([secs, inc] and term t), up
  (false: the server stops listening and closes its connections, for good), in_set (false: the
  member left the set config: its replSetGetStatus fails with InvalidReplicaSetConfig, as a
  removed member's does, and the others do not list it), applying
  (false: its copy of the heartbeat collection stops following the primary's), stale_primary
  (a member index: this member's replSetGetStatus still shows that member as PRIMARY, as a
  member's view does for up to a heartbeat interval after a step-down).
- clock_ms: the primary's clock (replSetGetStatus `date`, hello `localTime`); null: real time.
- oplog: entries appended to the primary's oplog (kept in ts order); `oplog_reset: true`
  empties it first.
"""

import copy
import datetime
import json
import sys
import threading
import time

from bson import Int64, ObjectId, Timestamp
from mockupdb import MockupDB

SET_NAME = "rs0"
LOCK = threading.Lock()
STATE = {"members": {}, "clock_ms": None, "oplog": [], "heartbeat": {}}
SERVERS = []


def now_ms():
    return STATE["clock_ms"] if STATE["clock_ms"] is not None else int(time.time() * 1000)


def date(ms):
    return datetime.datetime.fromtimestamp(ms / 1000.0, tz=datetime.timezone.utc)


def member(index):
    return STATE["members"][str(index)]


def primary_index():
    for index, m in STATE["members"].items():
        if m["state"] == "PRIMARY" and m["up"] and m["in_set"]:
            return int(index)
    return None


STATE_CODES = {
    "STARTUP": 0, "PRIMARY": 1, "SECONDARY": 2, "RECOVERING": 3, "STARTUP2": 5,
    "UNKNOWN": 6, "ARBITER": 7, "DOWN": 8, "ROLLBACK": 9, "REMOVED": 10,
}


def optime(m):
    secs, inc = m["optime"]["ts"]
    return {"ts": Timestamp(secs, inc), "t": Int64(m["optime"]["t"])}


def optime_date(m):
    return date(m["optime"]["ts"][0] * 1000)


def status_of(index, m, me):
    """One entry of replSetGetStatus.members, as member `me` sees member `index`."""
    entry = {"_id": index, "name": m["name"]}
    if index != me and not m["up"]:
        entry.update({"health": 0.0, "state": 8, "stateStr": "(not reachable/healthy)",
                      "uptime": 0, "optime": {"ts": Timestamp(0, 0), "t": Int64(-1)},
                      "optimeDate": date(0), "lastHeartbeatMessage": "Connection refused"})
        return entry
    state = m["state"]
    if member(me).get("stale_primary") == index:
        state = "PRIMARY"
    entry.update({"health": 1.0, "state": STATE_CODES.get(state, 6),
                  "stateStr": state, "uptime": 100, "optime": optime(m),
                  "optimeDate": optime_date(m)})
    if index == me:
        entry["self"] = True
    return entry


def repl_set_get_status(me):
    m = member(me)
    if not m["in_set"]:
        # A member removed from the set config keeps answering, in state REMOVED.
        return {"ok": 0.0, "errmsg": "Our replica set config is invalid or we are not a member of it",
                "code": 93, "codeName": "InvalidReplicaSetConfig"}
    members = [status_of(int(i), x, me) for i, x in sorted(STATE["members"].items(), key=lambda kv: int(kv[0]))
               if x["in_set"]]
    clock = now_ms() if m["state"] == "PRIMARY" else int(time.time() * 1000)
    return {"set": SET_NAME, "date": date(clock), "myState": STATE_CODES.get(m["state"], 6),
            "term": Int64(max(x["optime"]["t"] for x in STATE["members"].values())),
            "heartbeatIntervalMillis": Int64(2000), "members": members, "ok": 1.0}


def hello(me):
    m = member(me)
    reply = {"helloOk": True, "isWritablePrimary": False, "ismaster": False,
             "secondary": False, "me": m["name"],
             "maxBsonObjectSize": 16777216, "maxMessageSizeBytes": 48000000,
             "maxWriteBatchSize": 100000, "localTime": date(now_ms()),
             "logicalSessionTimeoutMinutes": 30, "connectionId": 1,
             "minWireVersion": 0, "maxWireVersion": 21, "readOnly": False, "ok": 1.0}
    if not m["in_set"]:
        reply["isreplicaset"] = True
        return reply
    primary = primary_index()
    reply.update({"setName": SET_NAME, "setVersion": 1,
                  "hosts": [x["name"] for _, x in sorted(STATE["members"].items(), key=lambda kv: int(kv[0]))
                            if x["in_set"]],
                  "lastWrite": {"opTime": optime(m), "lastWriteDate": optime_date(m)}})
    if primary is not None:
        reply["primary"] = member(primary)["name"]
    if m["state"] == "PRIMARY":
        reply.update({"isWritablePrimary": True, "ismaster": True,
                      "electionId": ObjectId("7fffffff%016x" % m["optime"]["t"])})
    elif m["state"] == "SECONDARY":
        reply["secondary"] = True
    return reply


def heartbeat_view(me):
    """The heartbeat collection as member `me` shows it."""
    m = member(me)
    primary = primary_index()
    if m["state"] == "PRIMARY":
        return STATE["heartbeat"]
    if m.get("applying", True) and primary is not None:
        m["heartbeat"] = copy.deepcopy(STATE["heartbeat"])
    return m.setdefault("heartbeat", {})


def find(me, doc):
    namespace = (doc.get("$db"), doc.get("find"))
    query = doc.get("filter") or {}
    limit = abs(int(doc.get("limit", 0) or 0))
    if namespace == ("local", "oplog.rs"):
        if member(me)["state"] != "PRIMARY":
            docs = []
        else:
            after = query.get("ts", {}).get("$gt", Timestamp(0, 0))
            skip_op = query.get("op", {}).get("$ne")
            docs = [entry_doc(e) for e in STATE["oplog"]
                    if Timestamp(*e["ts"]) > after and e["op"] != skip_op]
    else:
        collection = heartbeat_view(me).get("%s.%s" % namespace, {})
        wanted = query.get("_id")
        docs = [d for key, d in collection.items() if wanted is None or key == wanted]
    if limit:
        docs = docs[:limit]
    return {"cursor": {"id": Int64(0), "ns": "%s.%s" % namespace, "firstBatch": docs}, "ok": 1.0}


def entry_doc(e):
    return {"op": e["op"], "ns": e.get("ns", ""), "o": e.get("o", {}),
            "ts": Timestamp(*e["ts"]), "t": Int64(e["t"]), "v": Int64(2),
            "wall": date(e["wall_ms"])}


def update(me, doc):
    if member(me)["state"] != "PRIMARY":
        return {"ok": 0.0, "errmsg": "not primary", "code": 10107, "codeName": "NotWritablePrimary"}
    collection = STATE["heartbeat"].setdefault("%s.%s" % (doc["$db"], doc["update"]), {})
    for change in doc.get("updates", []):
        key = change["q"]["_id"]
        if key not in collection:
            if not change.get("upsert"):
                continue
            collection[key] = {"_id": key}
            collection[key].update(change["u"].get("$setOnInsert", {}))
        collection[key].update(change["u"].get("$set", {}))
    return {"n": len(doc.get("updates", [])), "nModified": 1, "ok": 1.0}


def handler(me):
    def handle(request):
        doc = request.doc
        name = request.command_name.lower() if request.command_name else ""
        with LOCK:
            if name in ("hello", "ismaster"):
                reply = hello(me)
            elif name == "replsetgetstatus":
                reply = repl_set_get_status(me)
            elif name == "find":
                reply = find(me, doc)
            elif name == "update":
                reply = update(me, doc)
            elif name in ("ping", "endsessions", "killcursors"):
                reply = {"ok": 1.0}
            else:
                reply = {"ok": 0.0, "errmsg": "no such command: '%s'" % name, "code": 59,
                         "codeName": "CommandNotFound"}
        return request.replies(reply)
    return handle


def apply(change):
    """Merges `change` into the state; returns the servers to stop (outside the lock: a
    server's threads may be waiting for it)."""
    stopping = []
    for index, fields in change.get("members", {}).items():
        m = member(index)
        was_up = m["up"]
        m.update(fields)
        if was_up and not m["up"]:
            stopping.append(SERVERS[int(index)])
    if "clock_ms" in change:
        STATE["clock_ms"] = change["clock_ms"]
    if change.get("oplog_reset"):
        STATE["oplog"] = []
    STATE["oplog"].extend(change.get("oplog", []))
    STATE["oplog"].sort(key=lambda e: tuple(e["ts"]))
    return stopping


def main():
    count = int(sys.argv[1])
    for index in range(count):
        server = MockupDB(port=0, request_timeout=5)
        # Bind 127.0.0.1, the address the members call themselves (not `localhost`, which may
        # be ::1).
        server._address = ("127.0.0.1", 0)
        port = server.run()
        server.autoresponds(handler(index))
        SERVERS.append(server)
        STATE["members"][str(index)] = {
            "name": "127.0.0.1:%d" % port, "state": "PRIMARY" if index == 0 else "SECONDARY",
            "optime": {"ts": [1, 1], "t": 1}, "up": True, "in_set": True, "applying": True}
    print("ports " + " ".join(str(s.port) for s in SERVERS), flush=True)
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            with LOCK:
                stopping = apply(json.loads(line))
            for server in stopping:
                server.stop()
            print("ok", flush=True)
        except Exception as error:  # the test shows this line
            print("error %r" % (error,), flush=True)
    for server in SERVERS:
        server.stop()


if __name__ == "__main__":
    main()
