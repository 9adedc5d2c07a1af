/* shoal C99 API.
 *
 * Conventions:
 * - Every function that can fail returns shoal_status; SHOAL_OK is 0. shoal_strerror() names a
 *   status. No function aborts or throws on bad input: it returns SHOAL_ERR_INVALID_ARGUMENT.
 * - Handles are opaque pointers created by *_create and released by *_destroy (or *_free). A
 *   destroy function accepts NULL.
 * - Timeouts are milliseconds; a negative timeout means the communicator's default
 *   (shoal_options.timeout_ms). Every blocking call ends by its deadline plus at most
 *   verdict_grace_ms.
 * - Strings passed in are copied; strings returned are owned by shoal and stay valid as stated.
 * - Collectives may fill a shoal_op_info (pass NULL if not needed): the status again, the peer the
 *   failure is blamed on, the epoch, and a message. All surviving members of a failed collective
 *   get the same status and lost_peer.
 * - Thread safety: a communicator may be used from several threads at once; each request by one
 *   thread at a time.
 */
#ifndef SHOAL_SHOAL_H_
#define SHOAL_SHOAL_H_

#include <stddef.h>
#include <stdint.h>

#include "shoal/types.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct shoal_comm shoal_comm;
typedef struct shoal_request shoal_request;

typedef struct shoal_options {
  const char* coordinator_host; /* default "127.0.0.1" */
  uint16_t coordinator_port;    /* default 48150 */
  const char* data_host;        /* address other peers use to reach us; default "127.0.0.1" */
  const char* data_bind_host;   /* where to listen; NULL = data_host */
  uint16_t data_port;           /* 0 = any */
  uint64_t peer_id;             /* 0 = random */
  int64_t timeout_ms;           /* default deadline; default 30000 */
  int64_t verdict_grace_ms;     /* default 2000 */
  int64_t setup_timeout_ms;     /* default 10000 */
  const char* log_level;        /* "trace".."error", "off"; default "warn" */
  /* Coordinator loss: reconnect for this long, keeping state (0: fail at once); default 60000 */
  int64_t reconnect_window_ms;
  int64_t reconnect_backoff_max_ms; /* longest pause between reconnect attempts; default 500 */
  const char* secret;            /* group secret (NUL-terminated), NULL or "" = none; default NULL */
  const char* coordinator_standbys; /* "host:port,host:port" tried after the primary; NULL = none */
  int tls;                       /* non-zero: TLS 1.3 on all connections (shoal.hpp); default 0 */
} shoal_options;

typedef struct shoal_op_info {
  shoal_status status;
  uint64_t lost_peer; /* the peer a failure is blamed on, 0 if none */
  uint64_t epoch;     /* the epoch the collective ran in */
  char message[256];  /* NUL-terminated, possibly truncated */
} shoal_op_info;

/* One tensor of a shared state (see shoal.hpp SharedTensor). */
typedef struct shoal_tensor {
  const char* name;       /* NUL-terminated, 1 to 255 bytes, unique within the state */
  shoal_dtype dtype;
  uint64_t count;         /* elements */
  void* data;             /* may be overwritten by a sync; may be NULL when count is 0 */
  int allow_divergence;   /* non-zero: members at the group's revision may differ here */
} shoal_tensor;

/* A shared state: tensors and a revision the caller advances by one per step. */
typedef struct shoal_shared_state {
  uint64_t revision;      /* in: this peer's revision; out (on success): the group's */
  const shoal_tensor* tensors;
  uint32_t tensor_count;
} shoal_shared_state;

#define SHOAL_SYNC_SENDERS_MAX 64
/* What a sync did on this peer. */
typedef struct shoal_sync_info {
  uint64_t revision;          /* the group's revision after the sync */
  uint64_t rx_bytes;          /* received into this peer's tensors */
  uint64_t tx_bytes;          /* sent to other members */
  uint32_t tensors_received;
  uint32_t sender_count;      /* senders listed below; at most SHOAL_SYNC_SENDERS_MAX */
  uint64_t sender_ids[SHOAL_SYNC_SENDERS_MAX];
  uint64_t sender_bytes[SHOAL_SYNC_SENDERS_MAX];
  double hash_seconds;        /* spent hashing this peer's tensors */
  double transfer_seconds;    /* from the plan to this peer's part done, hash checks included */
} shoal_sync_info;

/* Fills *options with the defaults. */
void shoal_options_init(shoal_options* options);

/* Connects to the coordinator and waits to be welcomed (see shoal.hpp Communicator::Create). */
shoal_status shoal_comm_create(const shoal_options* options, shoal_comm** out);
/* Leaves the group if still in it and frees the communicator. */
void shoal_comm_destroy(shoal_comm* comm);

shoal_status shoal_update_topology(shoal_comm* comm, int64_t timeout_ms);

shoal_status shoal_all_reduce(shoal_comm* comm, const void* send, void* recv, uint64_t count,
                              shoal_dtype dtype, shoal_reduce_op op, uint64_t tag,
                              int64_t timeout_ms, shoal_op_info* info);
shoal_status shoal_all_reduce_async(shoal_comm* comm, const void* send, void* recv,
                                    uint64_t count, shoal_dtype dtype, shoal_reduce_op op,
                                    uint64_t tag, int64_t timeout_ms, shoal_request** out);
/* SHOAL_ERR_TIMEOUT with a timeout shorter than the collective's own deadline means "not yet". */
shoal_status shoal_request_wait(shoal_request* request, int64_t timeout_ms, shoal_op_info* info);
/* Waits for an unfinished request (within its deadline), then frees it. Accepts NULL. */
void shoal_request_free(shoal_request* request);

/* Makes every member's shared state equal (see shoal.hpp Communicator::SyncSharedState). A
 * collective: every member calls it. `op_info` and `sync_info` may be NULL. */
shoal_status shoal_sync_shared_state(shoal_comm* comm, shoal_shared_state* state,
                                     int64_t timeout_ms, shoal_op_info* op_info,
                                     shoal_sync_info* sync_info);

shoal_status shoal_leave(shoal_comm* comm);

uint64_t shoal_peer_id(const shoal_comm* comm);
uint64_t shoal_epoch(const shoal_comm* comm);
uint32_t shoal_world_size(const shoal_comm* comm);
uint32_t shoal_rank(const shoal_comm* comm);
int shoal_is_member(const shoal_comm* comm);
/* Copies up to `capacity` member ids in ring order into `out`; returns the number of members. */
uint32_t shoal_members(const shoal_comm* comm, uint64_t* out, uint32_t capacity);

#ifdef __cplusplus
}
#endif

#endif /* SHOAL_SHOAL_H_ */
