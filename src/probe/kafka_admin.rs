//! Two librdkafka admin calls the `rdkafka` crate does not wrap: `ListOffsets` (log start and
//! last stable offset of many partitions in one request per leader, with `read_committed`
//! isolation) and `ListConsumerGroupOffsets` (another group's committed offsets, without
//! joining it).
//!
//! This is the only file with `unsafe` code. The alternative without FFI — one consumer client
//! per measured group, just to ask for its commits, and one watermark request per partition —
//! costs a client (threads and connections) per group and a round trip per partition, which
//! does not scale to thousands of groups and tens of thousands of partitions. Every native
//! object created here is owned by a guard that destroys it on every path.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::ffi::{CStr, CString, c_char, c_void};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::{Offset, TopicPartitionList};

/// How long librdkafka may take over a group-coordinator request (see `group_offsets`).
const COORDINATOR_REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// Which end of a partition `list_offsets` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The log start offset.
    Earliest,
    /// With `read_committed`: the last stable offset (no open transaction below it).
    LastStable,
    /// With `read_uncommitted`: the high watermark.
    High,
}

/// A partition's answer: its offset, or the broker's error for it.
pub type PartitionResult = Result<i64, String>;

/// Offsets of many partitions of one cluster, keyed by (topic, partition).
pub type OffsetMap = HashMap<(String, i32), PartitionResult>;

/// A group's committed offsets, keyed by (topic, partition): `Ok(None)` for no commit.
pub type CommitMap = HashMap<(String, i32), Result<Option<i64>, String>>;

/// `rd_kafka_t` of a live client. The caller keeps the client alive for the call.
#[derive(Clone, Copy)]
pub struct Handle(pub *mut rd::rd_kafka_t);

/// Destroys a native object when dropped.
struct Guard<T> {
    ptr: *mut T,
    destroy: unsafe extern "C" fn(*mut T),
}

impl<T> Drop for Guard<T> {
    fn drop(&mut self) {
        if !self.ptr.is_null() {
            // SAFETY: `ptr` was returned by the matching librdkafka constructor and is
            // destroyed exactly once, here.
            unsafe { (self.destroy)(self.ptr) }
        }
    }
}

fn timeout_ms(timeout: Duration) -> i32 {
    i32::try_from(timeout.as_millis().max(1)).unwrap_or(i32::MAX)
}

/// Reads a C string owned by librdkafka into an owned `String`.
///
/// SAFETY: `text` must be null or a valid NUL-terminated string for the call's duration.
unsafe fn owned(text: *const c_char) -> String {
    if text.is_null() {
        String::new()
    } else {
        // SAFETY: guaranteed by the caller.
        unsafe { CStr::from_ptr(text) }
            .to_string_lossy()
            .into_owned()
    }
}

fn error_text(code: rd::rd_kafka_resp_err_t) -> String {
    // SAFETY: rd_kafka_err2str returns a static string for every code.
    unsafe { owned(rd::rd_kafka_err2str(code)) }
}

/// Creates admin options for `op` with a request timeout.
fn admin_options(
    handle: Handle,
    op: rd::rd_kafka_admin_op_t,
    timeout: Duration,
) -> Result<Guard<rd::rd_kafka_AdminOptions_t>, String> {
    // SAFETY: `handle.0` is a live client (caller's contract); options are owned by the guard.
    let options = Guard {
        ptr: unsafe { rd::rd_kafka_AdminOptions_new(handle.0, op) },
        destroy: rd::rd_kafka_AdminOptions_destroy,
    };
    if options.ptr.is_null() {
        return Err("librdkafka refused admin options".into());
    }
    let mut errstr = [0 as c_char; 256];
    // SAFETY: options is live; errstr is a writable buffer of the stated size.
    let code = unsafe {
        rd::rd_kafka_AdminOptions_set_request_timeout(
            options.ptr,
            timeout_ms(timeout),
            errstr.as_mut_ptr(),
            errstr.len(),
        )
    };
    if code != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        // SAFETY: librdkafka NUL-terminates errstr within its size.
        return Err(unsafe { owned(errstr.as_ptr()) });
    }
    Ok(options)
}

/// A result event handed from the dispatcher thread to the waiting caller.
struct Event(Guard<rd::rd_kafka_event_t>);

// SAFETY: an event is owned by exactly one side at a time (the dispatcher hands it over through
// a channel and never touches it again); librdkafka events may be read from any thread.
unsafe impl Send for Event {}

/// The raw queue pointer, shared with the dispatcher thread.
#[derive(Clone, Copy)]
struct QueuePtr(*mut rd::rd_kafka_queue_t);

// SAFETY: librdkafka queues are thread-safe; the pointer outlives the dispatcher thread (it is
// destroyed in `AdminQueue::drop` after the thread has been joined).
unsafe impl Send for QueuePtr {}
unsafe impl Sync for QueuePtr {}

type Waiters = Arc<Mutex<HashMap<usize, mpsc::SyncSender<Event>>>>;

/// One long-lived result queue per client, drained by a dispatcher thread that hands each
/// event to the caller waiting for it (matched by the request's opaque id).
///
/// A per-request queue would have to be destroyed when the caller gives up waiting, while
/// librdkafka may still complete the request into it — which aborts the process inside
/// librdkafka. Here a late result finds no waiter and is simply destroyed.
pub struct AdminQueue {
    queue: QueuePtr,
    waiters: Waiters,
    next_id: AtomicUsize,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Set once a request failed or timed out. librdkafka 2.12 aborts the process when a client
    /// is destroyed while a coordinator request that outlived its admin call is still queued on
    /// an unreachable broker (`rd_kafka_enq_once_del_source_return`). A tainted client and its
    /// queue are therefore never destroyed: leaking one client on reload or exit is the lesser
    /// harm.
    tainted: AtomicBool,
}

impl AdminQueue {
    pub fn new(handle: Handle) -> Result<Self, String> {
        // SAFETY: handle is a live client.
        let queue = unsafe { rd::rd_kafka_queue_new(handle.0) };
        if queue.is_null() {
            return Err("librdkafka refused a queue".into());
        }
        let queue = QueuePtr(queue);
        let waiters: Waiters = Arc::new(Mutex::new(HashMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (waiters, stop) = (waiters.clone(), stop.clone());
            std::thread::Builder::new()
                .name("lagbudget-kafka-admin".into())
                .spawn(move || dispatch(queue, &waiters, &stop))
                .map_err(|e| format!("cannot start the admin thread: {e}"))?
        };
        Ok(Self {
            queue,
            waiters,
            next_id: AtomicUsize::new(1),
            stop,
            thread: Some(thread),
            tainted: AtomicBool::new(false),
        })
    }

    /// True once any request failed: the client must not be destroyed (see `tainted`).
    pub fn is_tainted(&self) -> bool {
        self.tainted.load(Ordering::Relaxed)
    }

    /// Registers a waiter; the returned id goes into the request's options as its opaque.
    fn register(&self) -> (usize, mpsc::Receiver<Event>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = mpsc::sync_channel(1);
        self.waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, sender);
        (id, receiver)
    }

    /// Waits for the result of request `id`, checking the event's own error.
    fn wait(
        &self,
        id: usize,
        receiver: &mpsc::Receiver<Event>,
        timeout: Duration,
    ) -> Result<Event, String> {
        // Never past the caller's deadline: the probe's own timeout must see this error first.
        match receiver.recv_timeout(timeout) {
            Ok(event) => {
                // SAFETY: event is live.
                let code = unsafe { rd::rd_kafka_event_error(event.0.ptr) };
                if code == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                    return Ok(event);
                }
                self.tainted.store(true, Ordering::Relaxed);
                // SAFETY: the string lives as long as the event.
                let text = unsafe { owned(rd::rd_kafka_event_error_string(event.0.ptr)) };
                Err(if text.is_empty() {
                    error_text(code)
                } else {
                    text
                })
            }
            Err(_) => {
                self.tainted.store(true, Ordering::Relaxed);
                self.waiters
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
                Err("timed out waiting for the broker".into())
            }
        }
    }
}

impl Drop for AdminQueue {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if self.is_tainted() {
            // Requests may still reference the queue; so does the leaked client.
            return;
        }
        // SAFETY: the dispatcher has stopped; the queue was created in `new` and is destroyed
        // once, here, before the client that owns it (field order in `KafkaClient`).
        unsafe { rd::rd_kafka_queue_destroy(self.queue.0) };
    }
}

fn dispatch(queue: QueuePtr, waiters: &Waiters, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: the queue outlives this thread (see `AdminQueue::drop`).
        let event = unsafe { rd::rd_kafka_queue_poll(queue.0, 100) };
        if event.is_null() {
            continue;
        }
        let event = Event(Guard {
            ptr: event,
            destroy: rd::rd_kafka_event_destroy,
        });
        // SAFETY: event is live.
        let id = unsafe { rd::rd_kafka_event_opaque(event.0.ptr) } as usize;
        let waiter = waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        if let Some(sender) = waiter {
            // A waiter that gave up has been removed already; a send error only drops it.
            let _ = sender.send(event);
        }
    }
}

/// Reads one native partition entry.
///
/// SAFETY: `elem` must point to a valid `rd_kafka_topic_partition_t`.
unsafe fn read_partition(
    elem: *const rd::rd_kafka_topic_partition_t,
) -> ((String, i32), PartitionResult) {
    // SAFETY: guaranteed by the caller.
    let elem = unsafe { &*elem };
    // SAFETY: topic is a NUL-terminated string owned by the list.
    let topic = unsafe { owned(elem.topic) };
    let result = if elem.err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        Ok(elem.offset)
    } else {
        Err(error_text(elem.err))
    };
    ((topic, elem.partition), result)
}

/// Asks the partitions' leaders for one end of each partition, in one admin call.
pub fn list_offsets(
    handle: Handle,
    queue: &AdminQueue,
    partitions: &[(String, i32)],
    spec: OffsetSpec,
    timeout: Duration,
) -> Result<OffsetMap, String> {
    if partitions.is_empty() {
        return Ok(HashMap::new());
    }
    // librdkafka's offset spec values coincide with these logical offsets: -2 earliest,
    // -1 latest (the LSO under read_committed, the high watermark otherwise).
    let logical = match spec {
        OffsetSpec::Earliest => Offset::Beginning,
        OffsetSpec::LastStable | OffsetSpec::High => Offset::End,
    };
    let mut list = TopicPartitionList::with_capacity(partitions.len());
    for (topic, partition) in partitions {
        list.add_partition_offset(topic, *partition, logical)
            .map_err(|e| e.to_string())?;
    }
    let options = admin_options(
        handle,
        rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_LISTOFFSETS,
        timeout,
    )?;
    let isolation = if spec == OffsetSpec::High {
        rd::rd_kafka_IsolationLevel_t::RD_KAFKA_ISOLATION_LEVEL_READ_UNCOMMITTED
    } else {
        rd::rd_kafka_IsolationLevel_t::RD_KAFKA_ISOLATION_LEVEL_READ_COMMITTED
    };
    // SAFETY: options is live; a returned error object is owned by us and destroyed.
    let error = unsafe { rd::rd_kafka_AdminOptions_set_isolation_level(options.ptr, isolation) };
    if !error.is_null() {
        // SAFETY: error is a live error object, destroyed right after reading it.
        let text = unsafe { owned(rd::rd_kafka_error_string(error)) };
        unsafe { rd::rd_kafka_error_destroy(error) };
        return Err(text);
    }
    let (id, receiver) = queue.register();
    // SAFETY: all pointers are live; librdkafka copies the list and options before returning.
    unsafe {
        rd::rd_kafka_AdminOptions_set_opaque(options.ptr, id as *mut c_void);
        rd::rd_kafka_ListOffsets(handle.0, list.ptr(), options.ptr, queue.queue.0);
    }
    let event = queue.wait(id, &receiver, timeout)?;
    // SAFETY: event is live; its type follows from the request its id belongs to.
    let result = unsafe { rd::rd_kafka_event_ListOffsets_result(event.0.ptr) };
    if result.is_null() {
        return Err("unexpected admin event".into());
    }
    let mut count = 0usize;
    // SAFETY: result is live while event is; infos has `count` entries.
    let infos = unsafe { rd::rd_kafka_ListOffsets_result_infos(result, &mut count) };
    let mut out = HashMap::with_capacity(count);
    for i in 0..count {
        // SAFETY: i < count; each info and its partition live as long as the event.
        let (key, value) = unsafe {
            let info = *infos.add(i);
            read_partition(rd::rd_kafka_ListOffsetsResultInfo_topic_partition(info))
        };
        out.insert(key, value);
    }
    Ok(out)
}

/// The committed offsets of `group` for `partitions`. A partition without a commit has
/// `Ok(None)`.
pub fn group_offsets(
    handle: Handle,
    queue: &AdminQueue,
    group: &str,
    partitions: &[(String, i32)],
    timeout: Duration,
) -> Result<CommitMap, String> {
    let group_c = CString::new(group).map_err(|_| "group id contains NUL".to_owned())?;
    let mut list = TopicPartitionList::with_capacity(partitions.len().max(1));
    for (topic, partition) in partitions {
        list.add_partition(topic, *partition);
    }
    // librdkafka 2.12 aborts the process when a coordinator admin request times out while its
    // coordinator lookup is still pending and is purged later (`eonce->refcnt > 0` in
    // rd_kafka_admin_coord_response_parse, seen with a broker down). So the request itself is
    // given far longer than the caller waits; the caller stops waiting at `timeout`, and the
    // late answer is dropped by the queue's dispatcher.
    let options = admin_options(
        handle,
        rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_LISTCONSUMERGROUPOFFSETS,
        COORDINATOR_REQUEST_TIMEOUT.max(timeout),
    )?;
    // SAFETY: group_c and list are live; the request object copies both.
    let request = Guard {
        ptr: unsafe { rd::rd_kafka_ListConsumerGroupOffsets_new(group_c.as_ptr(), list.ptr()) },
        destroy: rd::rd_kafka_ListConsumerGroupOffsets_destroy,
    };
    if request.ptr.is_null() {
        return Err("librdkafka refused the request".into());
    }
    let (id, receiver) = queue.register();
    let mut requests = [request.ptr];
    // SAFETY: all pointers live; librdkafka copies the request array and options.
    unsafe {
        rd::rd_kafka_AdminOptions_set_opaque(options.ptr, id as *mut c_void);
        rd::rd_kafka_ListConsumerGroupOffsets(
            handle.0,
            requests.as_mut_ptr(),
            1,
            options.ptr,
            queue.queue.0,
        )
    };
    let event = queue.wait(id, &receiver, timeout)?;
    // SAFETY: event is live; its type follows from the request its id belongs to.
    let result = unsafe { rd::rd_kafka_event_ListConsumerGroupOffsets_result(event.0.ptr) };
    if result.is_null() {
        return Err("unexpected admin event".into());
    }
    let mut count = 0usize;
    // SAFETY: result lives as long as the event.
    let groups = unsafe { rd::rd_kafka_ListConsumerGroupOffsets_result_groups(result, &mut count) };
    if count == 0 || groups.is_null() {
        return Err("no result for the group".into());
    }
    // SAFETY: count >= 1.
    let group_result = unsafe { *groups };
    // SAFETY: group_result is live while the event is.
    let error = unsafe { rd::rd_kafka_group_result_error(group_result) };
    if !error.is_null() {
        // SAFETY: the error belongs to the result; read, not destroyed.
        return Err(unsafe { owned(rd::rd_kafka_error_string(error)) });
    }
    // SAFETY: as above.
    let list = unsafe { rd::rd_kafka_group_result_partitions(group_result) };
    let mut out = HashMap::new();
    if list.is_null() {
        return Ok(out);
    }
    // SAFETY: list is a valid partition list with `cnt` elements.
    let (elems, cnt) = unsafe { ((*list).elems, (*list).cnt) };
    for i in 0..usize::try_from(cnt).unwrap_or(0) {
        // SAFETY: i < cnt.
        let (key, value) = unsafe { read_partition(elems.add(i)) };
        // librdkafka reports "no commit" as the logical offset INVALID (-1001).
        let value = value.map(|offset| (offset >= 0).then_some(offset));
        out.insert(key, value);
    }
    Ok(out)
}
