/*
 * Batched RTP receive (SIP.md 5; issue 13's bench/rtp.py): the node's RTP sockets in one
 * epoll set, read a tick at a time with recvmmsg, handed to Python in runs.
 *
 * Why native: a G.711 leg sends fifty datagrams a second. Through the event loop each is a
 * wake-up, a recvfrom, a Python callback and a header parse, about as much as everything
 * else the recorder does with it. Here the node reads every ready socket once a tick
 * (ports.py) and joins the packets that simply continue each other, which is nearly all of
 * them, so Python sees one run per leg per tick rather than one call per packet.
 *
 * A run is packets of one socket, from one source, with the usual header (version 2, no
 * padding, extension, CSRC or marker), one payload type and SSRC, consecutive sequence
 * numbers, each timestamp the previous plus its payload's length (a byte a sample, G.711),
 * and payloads of one length. Anything else is handed over alone, as received, for the
 * full per-packet path (rtp/stream.py), which decides everything: this code only groups,
 * it never drops or judges a packet.
 *
 * Arrival times are the kernel's (SO_TIMESTAMPNS), moved onto CLOCK_MONOTONIC, the event
 * loop's clock: the tick's delay does not move the window rule's judgement (R2) of when a
 * packet came. Datagrams the kernel dropped for a full socket buffer are counted
 * (SO_RXQ_OVFL) and reported per socket.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define VLEN 32            /* datagrams per recvmmsg */
#define BUFFER 1504        /* past MAX_DATAGRAM (1500): a bigger one stays too big */
#define HEADER 12
#define CONTROL 128        /* room for a timestamp and an overflow counter */

typedef struct {
    PyObject *owner;       /* NULL: no socket of ours on this descriptor */
    uint32_t overflow;     /* the kernel's drop counter as last seen (SO_RXQ_OVFL) */
} Slot;

typedef struct {
    PyObject_HEAD
    int epfd;
    Slot *slots;           /* by descriptor */
    int capacity;
    int registered;
    struct epoll_event *events;
    int events_capacity;
    /* The run being gathered, and its payloads. */
    unsigned char *joined;
    size_t joined_capacity;
} Batch;

typedef struct {
    struct sockaddr_storage from;
    socklen_t from_len;
    PyObject *source;      /* (host, port): made once per source per socket per drain */
    int pt;
    uint32_t ssrc, ts, next_ts;
    uint16_t seq, next_seq;
    Py_ssize_t size;       /* one payload's length */
    Py_ssize_t count;
    size_t length;         /* bytes in joined */
    PyObject *arrivals;    /* list of floats */
} Run;

static double monotonic_offset(void)
{
    /* What to add to a CLOCK_REALTIME time to put it on CLOCK_MONOTONIC. */
    struct timespec real, mono;
    clock_gettime(CLOCK_REALTIME, &real);
    clock_gettime(CLOCK_MONOTONIC, &mono);
    return ((double)mono.tv_sec - (double)real.tv_sec) +
           ((double)mono.tv_nsec - (double)real.tv_nsec) * 1e-9;
}

static double monotonic_now(void)
{
    struct timespec mono;
    clock_gettime(CLOCK_MONOTONIC, &mono);
    return (double)mono.tv_sec + (double)mono.tv_nsec * 1e-9;
}

static PyObject *address_of(const struct sockaddr_storage *from)
{
    char host[INET6_ADDRSTRLEN];
    if (from->ss_family == AF_INET) {
        const struct sockaddr_in *v4 = (const struct sockaddr_in *)from;
        inet_ntop(AF_INET, &v4->sin_addr, host, sizeof host);
        return Py_BuildValue("(si)", host, (int)ntohs(v4->sin_port));
    }
    if (from->ss_family == AF_INET6) {
        const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)from;
        inet_ntop(AF_INET6, &v6->sin6_addr, host, sizeof host);
        return Py_BuildValue("(siII)", host, (int)ntohs(v6->sin6_port),
                             (unsigned)ntohl(v6->sin6_flowinfo), (unsigned)v6->sin6_scope_id);
    }
    Py_RETURN_NONE;
}

static int grow_joined(Batch *self, size_t wanted)
{
    if (wanted <= self->joined_capacity)
        return 0;
    size_t capacity = self->joined_capacity ? self->joined_capacity : 4096;
    while (capacity < wanted)
        capacity *= 2;
    unsigned char *bigger = PyMem_Realloc(self->joined, capacity);
    if (bigger == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->joined = bigger;
    self->joined_capacity = capacity;
    return 0;
}

/* (owner, source, data, count, pt, seq, ts, ssrc, arrivals); count 0: data is a whole
 * datagram, to be parsed in Python. */
static int emit(PyObject *out, PyObject *owner, PyObject *source, PyObject *data,
                Py_ssize_t count, int pt, unsigned seq, unsigned long ts, unsigned long ssrc,
                PyObject *arrivals)
{
    PyObject *item = PyTuple_New(9);
    if (item == NULL) {
        Py_DECREF(data);
        Py_DECREF(arrivals);
        return -1;
    }
    Py_INCREF(owner);
    Py_INCREF(source);
    PyTuple_SET_ITEM(item, 0, owner);
    PyTuple_SET_ITEM(item, 1, source);
    PyTuple_SET_ITEM(item, 2, data);
    PyTuple_SET_ITEM(item, 3, PyLong_FromSsize_t(count));
    PyTuple_SET_ITEM(item, 4, PyLong_FromLong(pt));
    PyTuple_SET_ITEM(item, 5, PyLong_FromUnsignedLong(seq));
    PyTuple_SET_ITEM(item, 6, PyLong_FromUnsignedLong(ts));
    PyTuple_SET_ITEM(item, 7, PyLong_FromUnsignedLong(ssrc));
    PyTuple_SET_ITEM(item, 8, arrivals);
    int failed = PyList_Append(out, item);
    Py_DECREF(item);
    return failed;
}

static int close_run(Batch *self, Run *run, PyObject *owner, PyObject *out)
{
    if (run->count == 0)
        return 0;
    PyObject *data = PyBytes_FromStringAndSize((const char *)self->joined,
                                               (Py_ssize_t)run->length);
    PyObject *arrivals = PyList_AsTuple(run->arrivals);
    Py_CLEAR(run->arrivals);
    Py_ssize_t count = run->count;
    run->count = 0;
    run->length = 0;
    if (data == NULL || arrivals == NULL) {
        Py_XDECREF(data);
        Py_XDECREF(arrivals);
        return -1;
    }
    return emit(out, owner, run->source, data, count, run->pt, run->seq, run->ts, run->ssrc,
                arrivals);
}

static PyObject *source_for(Run *run, const struct sockaddr_storage *from, socklen_t len)
{
    if (run->source != NULL && run->from_len == len && memcmp(&run->from, from, len) == 0)
        return run->source;
    Py_XDECREF(run->source);
    memcpy(&run->from, from, len);
    run->from_len = len;
    run->source = address_of(from);
    return run->source;
}

/* One datagram: it continues the run, starts a new one, or goes alone. */
static int take(Batch *self, Run *run, PyObject *owner, PyObject *out,
                const unsigned char *data, Py_ssize_t length, int truncated,
                const struct sockaddr_storage *from, socklen_t from_len, double arrival)
{
    int usual = !truncated && length > HEADER && length <= BUFFER - 4 && data[0] == 0x80 &&
                data[1] < 128;
    int same_source = run->source != NULL && run->from_len == from_len &&
                      memcmp(&run->from, from, from_len) == 0;
    if (usual && run->count > 0 && same_source) {
        uint16_t seq = (uint16_t)((data[2] << 8) | data[3]);
        uint32_t ts = ((uint32_t)data[4] << 24) | ((uint32_t)data[5] << 16) |
                      ((uint32_t)data[6] << 8) | data[7];
        uint32_t ssrc = ((uint32_t)data[8] << 24) | ((uint32_t)data[9] << 16) |
                        ((uint32_t)data[10] << 8) | data[11];
        if (data[1] == run->pt && ssrc == run->ssrc && seq == run->next_seq &&
            ts == run->next_ts && length - HEADER == run->size) {
            if (grow_joined(self, run->length + (size_t)run->size) < 0)
                return -1;
            memcpy(self->joined + run->length, data + HEADER, (size_t)run->size);
            run->length += (size_t)run->size;
            run->count += 1;
            run->next_seq = (uint16_t)(seq + 1);
            run->next_ts = ts + (uint32_t)run->size;
            PyObject *at = PyFloat_FromDouble(arrival);
            if (at == NULL || PyList_Append(run->arrivals, at) < 0) {
                Py_XDECREF(at);
                return -1;
            }
            Py_DECREF(at);
            return 0;
        }
    }
    if (close_run(self, run, owner, out) < 0)
        return -1;
    PyObject *source = source_for(run, from, from_len);
    if (source == NULL)
        return -1;
    if (!usual) {
        PyObject *whole = PyBytes_FromStringAndSize((const char *)data, length);
        PyObject *arrivals = Py_BuildValue("(d)", arrival);
        if (whole == NULL || arrivals == NULL) {
            Py_XDECREF(whole);
            Py_XDECREF(arrivals);
            return -1;
        }
        return emit(out, owner, source, whole, 0, 0, 0, 0, 0, arrivals);
    }
    run->pt = data[1];
    run->seq = (uint16_t)((data[2] << 8) | data[3]);
    run->ts = ((uint32_t)data[4] << 24) | ((uint32_t)data[5] << 16) |
              ((uint32_t)data[6] << 8) | data[7];
    run->ssrc = ((uint32_t)data[8] << 24) | ((uint32_t)data[9] << 16) |
                ((uint32_t)data[10] << 8) | data[11];
    run->size = length - HEADER;
    run->next_seq = (uint16_t)(run->seq + 1);
    run->next_ts = run->ts + (uint32_t)run->size;
    if (grow_joined(self, (size_t)run->size) < 0)
        return -1;
    memcpy(self->joined, data + HEADER, (size_t)run->size);
    run->length = (size_t)run->size;
    run->count = 1;
    run->arrivals = Py_BuildValue("[d]", arrival);
    return run->arrivals == NULL ? -1 : 0;
}

/* Everything one socket holds, up to `limit` datagrams: the rest waits for the next tick
 * in the socket's buffer, which the kernel bounds (a flood is dropped there, counted). */
static int drain_socket(Batch *self, int fd, PyObject *out, Py_ssize_t limit, double offset)
{
    static unsigned char buffers[VLEN][BUFFER];
    static unsigned char controls[VLEN][CONTROL];
    static struct sockaddr_storage names[VLEN];
    struct mmsghdr messages[VLEN];
    struct iovec vectors[VLEN];
    Slot *slot = &self->slots[fd];
    PyObject *owner = slot->owner;
    Run run = {0};
    int failed = 0;
    Py_ssize_t got = 0;
    Py_INCREF(owner); /* a callback may unregister it while its runs are out */
    while (got < limit && !failed) {
        int wanted = limit - got < VLEN ? (int)(limit - got) : VLEN;
        for (int i = 0; i < wanted; i++) {
            vectors[i].iov_base = buffers[i];
            vectors[i].iov_len = BUFFER;
            memset(&messages[i].msg_hdr, 0, sizeof messages[i].msg_hdr);
            messages[i].msg_hdr.msg_name = &names[i];
            messages[i].msg_hdr.msg_namelen = sizeof names[i];
            messages[i].msg_hdr.msg_iov = &vectors[i];
            messages[i].msg_hdr.msg_iovlen = 1;
            messages[i].msg_hdr.msg_control = controls[i];
            messages[i].msg_hdr.msg_controllen = CONTROL;
        }
        int n = recvmmsg(fd, messages, (unsigned)wanted, MSG_DONTWAIT, NULL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            break; /* EAGAIN: drained; an ICMP error (ECONNREFUSED) is nothing to us */
        }
        for (int i = 0; i < n && !failed; i++) {
            struct msghdr *header = &messages[i].msg_hdr;
            double arrival = -1.0;
            for (struct cmsghdr *c = CMSG_FIRSTHDR(header); c; c = CMSG_NXTHDR(header, c)) {
                if (c->cmsg_level != SOL_SOCKET)
                    continue;
                if (c->cmsg_type == SCM_TIMESTAMPNS) {
                    struct timespec when;
                    memcpy(&when, CMSG_DATA(c), sizeof when);
                    arrival = (double)when.tv_sec + (double)when.tv_nsec * 1e-9 + offset;
                } else if (c->cmsg_type == SO_RXQ_OVFL) {
                    uint32_t dropped;
                    memcpy(&dropped, CMSG_DATA(c), sizeof dropped);
                    slot->overflow = dropped;
                }
            }
            if (arrival < 0)
                arrival = monotonic_now();
            failed = take(self, &run, owner, out, buffers[i], (Py_ssize_t)messages[i].msg_len,
                          (header->msg_flags & MSG_TRUNC) != 0,
                          (const struct sockaddr_storage *)header->msg_name,
                          header->msg_namelen, arrival) < 0;
        }
        got += n;
        if (n < wanted)
            break;
    }
    if (!failed)
        failed = close_run(self, &run, owner, out) < 0;
    Py_XDECREF(run.arrivals);
    Py_XDECREF(run.source);
    Py_DECREF(owner);
    return failed ? -1 : 0;
}

static PyObject *Batch_drain(Batch *self, PyObject *arg)
{
    Py_ssize_t limit = PyLong_AsSsize_t(arg);
    if (limit == -1 && PyErr_Occurred())
        return NULL;
    if (limit < 1) {
        PyErr_SetString(PyExc_ValueError, "limit must be positive");
        return NULL;
    }
    PyObject *out = PyList_New(0);
    if (out == NULL || self->registered == 0)
        return out;
    int n = epoll_wait(self->epfd, self->events, self->events_capacity, 0);
    if (n < 0) {
        if (errno == EINTR)
            return out;
        Py_DECREF(out);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    double offset = monotonic_offset();
    for (int i = 0; i < n; i++) {
        int fd = self->events[i].data.fd;
        if (fd < 0 || fd >= self->capacity || self->slots[fd].owner == NULL)
            continue; /* unregistered by a callback of this very drain */
        if (drain_socket(self, fd, out, limit, offset) < 0) {
            Py_DECREF(out);
            return NULL;
        }
    }
    return out;
}

/* The descriptor `arg` names, if registered; -1 with KeyError (or TypeError) if not. */
static int registered_fd(Batch *self, PyObject *arg)
{
    int fd = (int)PyLong_AsLong(arg);
    if (fd == -1 && PyErr_Occurred())
        return -1;
    if (fd < 0 || fd >= self->capacity || self->slots[fd].owner == NULL) {
        PyErr_SetString(PyExc_KeyError, "descriptor not registered");
        return -1;
    }
    return fd;
}

static PyObject *Batch_take(Batch *self, PyObject *args)
{
    PyObject *descriptor;
    Py_ssize_t limit;
    if (!PyArg_ParseTuple(args, "On:take", &descriptor, &limit))
        return NULL;
    int fd = registered_fd(self, descriptor);
    if (fd < 0)
        return NULL;
    if (limit < 1) {
        PyErr_SetString(PyExc_ValueError, "limit must be positive");
        return NULL;
    }
    PyObject *out = PyList_New(0);
    if (out != NULL && drain_socket(self, fd, out, limit, monotonic_offset()) < 0)
        Py_CLEAR(out);
    return out;
}

static PyObject *Batch_register(Batch *self, PyObject *args)
{
    int fd;
    PyObject *owner;
    if (!PyArg_ParseTuple(args, "iO:register", &fd, &owner))
        return NULL;
    if (fd < 0) {
        PyErr_SetString(PyExc_ValueError, "not an open socket");
        return NULL;
    }
    if (fd >= self->capacity) {
        int capacity = self->capacity ? self->capacity : 256;
        while (capacity <= fd)
            capacity *= 2;
        Slot *bigger = PyMem_Realloc(self->slots, sizeof(Slot) * (size_t)capacity);
        if (bigger == NULL)
            return PyErr_NoMemory();
        memset(bigger + self->capacity, 0, sizeof(Slot) * (size_t)(capacity - self->capacity));
        self->slots = bigger;
        self->capacity = capacity;
    }
    if (self->slots[fd].owner != NULL) {
        PyErr_SetString(PyExc_ValueError, "descriptor already registered");
        return NULL;
    }
    int on = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof on) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_RXQ_OVFL, &on, sizeof on) < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    struct epoll_event event = {.events = EPOLLIN, .data.fd = fd};
    if (epoll_ctl(self->epfd, EPOLL_CTL_ADD, fd, &event) < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    if (self->registered + 1 > self->events_capacity) {
        int capacity = self->events_capacity ? self->events_capacity * 2 : 256;
        struct epoll_event *bigger =
            PyMem_Realloc(self->events, sizeof(struct epoll_event) * (size_t)capacity);
        if (bigger == NULL) {
            epoll_ctl(self->epfd, EPOLL_CTL_DEL, fd, NULL);
            return PyErr_NoMemory();
        }
        self->events = bigger;
        self->events_capacity = capacity;
    }
    Py_INCREF(owner);
    self->slots[fd] = (Slot){.owner = owner};
    self->registered += 1;
    Py_RETURN_NONE;
}

static PyObject *Batch_dropped(Batch *self, PyObject *arg)
{
    int fd = registered_fd(self, arg);
    if (fd < 0)
        return NULL;
    return PyLong_FromUnsignedLong(self->slots[fd].overflow);
}

static PyObject *Batch_unregister(Batch *self, PyObject *arg)
{
    int fd = registered_fd(self, arg);
    if (fd < 0)
        return NULL;
    epoll_ctl(self->epfd, EPOLL_CTL_DEL, fd, NULL); /* before the socket closes */
    uint32_t dropped = self->slots[fd].overflow;
    Py_CLEAR(self->slots[fd].owner);
    self->registered -= 1;
    return PyLong_FromUnsignedLong(dropped);
}

static PyObject *Batch_fileno(Batch *self, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromLong(self->epfd);
}

static PyObject *Batch_len(Batch *self, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromLong(self->registered);
}

static int Batch_init(Batch *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, ":Batch", keywords))
        return -1;
    if (self->epfd >= 0)
        return 0;
    self->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (self->epfd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return 0;
}

static PyObject *Batch_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    Batch *self = (Batch *)type->tp_alloc(type, 0);
    if (self != NULL)
        self->epfd = -1;
    return (PyObject *)self;
}

static int Batch_traverse(Batch *self, visitproc visit, void *arg)
{
    for (int fd = 0; fd < self->capacity; fd++)
        Py_VISIT(self->slots[fd].owner);
    return 0;
}

static int Batch_clear(Batch *self)
{
    for (int fd = 0; fd < self->capacity; fd++)
        Py_CLEAR(self->slots[fd].owner);
    self->registered = 0;
    return 0;
}

static PyObject *Batch_close(Batch *self, PyObject *Py_UNUSED(ignored))
{
    Batch_clear(self);
    if (self->epfd >= 0) {
        close(self->epfd);
        self->epfd = -1;
    }
    Py_RETURN_NONE;
}

static void Batch_dealloc(Batch *self)
{
    PyObject_GC_UnTrack(self);
    Batch_clear(self);
    if (self->epfd >= 0)
        close(self->epfd);
    PyMem_Free(self->slots);
    PyMem_Free(self->events);
    PyMem_Free(self->joined);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Batch_methods[] = {
    {"register", (PyCFunction)Batch_register, METH_VARARGS,
     "register(fd, owner): read this socket in the drains; runs name `owner`."},
    {"unregister", (PyCFunction)Batch_unregister, METH_O,
     "unregister(fd) -> the kernel's drop count of the socket; call before closing it."},
    {"dropped", (PyCFunction)Batch_dropped, METH_O,
     "dropped(fd) -> datagrams the kernel dropped for a full buffer, as it told with the "
     "latest datagram read (it tells with the next one it queues)."},
    {"drain", (PyCFunction)Batch_drain, METH_O,
     "drain(limit) -> runs of every ready socket, at most `limit` datagrams a socket."},
    {"take", (PyCFunction)Batch_take, METH_VARARGS,
     "take(fd, limit) -> the runs of one socket, whether or not the set is drained."},
    {"fileno", (PyCFunction)Batch_fileno, METH_NOARGS,
     "The epoll descriptor: readable while a socket has something."},
    {"registered", (PyCFunction)Batch_len, METH_NOARGS, "Sockets registered."},
    {"close", (PyCFunction)Batch_close, METH_NOARGS, "Close the epoll set."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject BatchType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "telephony.media.rtp._batch.Batch",
    .tp_doc = "RTP sockets read a tick at a time (see the module's source).",
    .tp_basicsize = sizeof(Batch),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = Batch_new,
    .tp_init = (initproc)Batch_init,
    .tp_dealloc = (destructor)Batch_dealloc,
    .tp_traverse = (traverseproc)Batch_traverse,
    .tp_clear = (inquiry)Batch_clear,
    .tp_methods = Batch_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "telephony.media.rtp._batch",
    .m_doc = "Batched RTP receive: epoll, recvmmsg, kernel arrival times, runs.",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__batch(void)
{
    if (PyType_Ready(&BatchType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&BatchType);
    if (PyModule_AddObject(m, "Batch", (PyObject *)&BatchType) < 0) {
        Py_DECREF(&BatchType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
