/* Compiled with -std=c99 -pedantic -Werror: proves shoal.h is C99. Run against a live coordinator
 * (port in argv[1]) it also checks the C API end to end on a group of one: create, admission,
 * all-reduce, shared-state sync, argument errors, leave. */
#include <shoal/shoal.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures = 0;
#define EXPECT(cond)                                                  \
  do {                                                                \
    if (!(cond)) {                                                    \
      fprintf(stderr, "%s:%d: expectation failed: %s\n", __FILE__, __LINE__, #cond); \
      failures++;                                                     \
    }                                                                 \
  } while (0)

int main(int argc, char** argv) {
  shoal_options opt;
  shoal_comm* comm = NULL;
  shoal_op_info info;
  float send[5] = {1.0f, 2.0f, 3.0f, 4.0f, 5.0f};
  float recv[5] = {0};
  int i;
  shoal_status s;

  if (argc != 2) {
    fprintf(stderr, "usage: %s COORDINATOR_PORT\n", argv[0]);
    return 2;
  }
  EXPECT(strcmp(shoal_strerror(SHOAL_OK), "ok") == 0);
  EXPECT(strcmp(shoal_strerror(SHOAL_ERR_PEER_LOST), "peer lost") == 0);
  EXPECT(shoal_strerror((shoal_status)999) != NULL);
  EXPECT(shoal_comm_create(NULL, &comm) == SHOAL_ERR_INVALID_ARGUMENT);

  shoal_options_init(&opt);
  opt.coordinator_port = (uint16_t)atoi(argv[1]);
  opt.timeout_ms = 10000;
  s = shoal_comm_create(&opt, &comm);
  if (s != SHOAL_OK) {
    fprintf(stderr, "shoal_comm_create: %s\n", shoal_strerror(s));
    return 1;
  }
  EXPECT(shoal_peer_id(comm) != 0);
  EXPECT(shoal_update_topology(comm, -1) == SHOAL_OK);
  EXPECT(shoal_is_member(comm) == 1);
  EXPECT(shoal_world_size(comm) == 1);
  EXPECT(shoal_rank(comm) == 0);
  EXPECT(shoal_epoch(comm) >= 1);

  s = shoal_all_reduce(comm, send, recv, 5, SHOAL_F32, SHOAL_SUM, 7, -1, &info);
  EXPECT(s == SHOAL_OK);
  EXPECT(info.status == SHOAL_OK);
  for (i = 0; i < 5; i++) EXPECT(recv[i] == send[i]);

  EXPECT(shoal_all_reduce(comm, send, recv, 5, (shoal_dtype)77, SHOAL_SUM, 0, -1, &info) ==
         SHOAL_ERR_INVALID_ARGUMENT);
  EXPECT(info.status == SHOAL_ERR_INVALID_ARGUMENT);
  EXPECT(strlen(info.message) > 0);
  EXPECT(shoal_all_reduce(comm, NULL, recv, 5, SHOAL_F32, SHOAL_SUM, 0, -1, NULL) ==
         SHOAL_ERR_INVALID_ARGUMENT);
  EXPECT(shoal_all_reduce(NULL, send, recv, 5, SHOAL_F32, SHOAL_SUM, 0, -1, NULL) ==
         SHOAL_ERR_INVALID_ARGUMENT);
  {
    uint64_t ids[4];
    EXPECT(shoal_members(comm, ids, 4) == 1);
    EXPECT(ids[0] == shoal_peer_id(comm));
  }
  {
    shoal_request* req = NULL;
    EXPECT(shoal_all_reduce_async(comm, send, send, 5, SHOAL_F32, SHOAL_MAX, 1, -1, &req) ==
           SHOAL_OK);
    EXPECT(shoal_request_wait(req, -1, &info) == SHOAL_OK);
    shoal_request_free(req);
    shoal_request_free(NULL);
  }
  {
    /* Shared state on a group of one: the revision is taken as reported, nothing moves; then the
     * same state one revision on; then argument errors. */
    float weights[3] = {1.0f, 2.0f, 3.0f};
    int64_t step = 42;
    shoal_tensor tensors[2];
    shoal_shared_state state;
    shoal_sync_info sync;
    tensors[0].name = "weights";
    tensors[0].dtype = SHOAL_F32;
    tensors[0].count = 3;
    tensors[0].data = weights;
    tensors[0].allow_divergence = 0;
    tensors[1].name = "step";
    tensors[1].dtype = SHOAL_I64;
    tensors[1].count = 1;
    tensors[1].data = &step;
    tensors[1].allow_divergence = 1;
    state.revision = 7;
    state.tensors = tensors;
    state.tensor_count = 2;
    EXPECT(shoal_sync_shared_state(comm, &state, -1, &info, &sync) == SHOAL_OK);
    EXPECT(state.revision == 7);
    EXPECT(sync.revision == 7);
    EXPECT(sync.rx_bytes == 0 && sync.tx_bytes == 0 && sync.sender_count == 0);
    state.revision = 8;
    weights[0] = 5.0f;
    EXPECT(shoal_sync_shared_state(comm, &state, -1, NULL, NULL) == SHOAL_OK);
    EXPECT(state.revision == 8 && weights[0] == 5.0f);
    state.revision = 10; /* skips 9 */
    EXPECT(shoal_sync_shared_state(comm, &state, -1, &info, NULL) == SHOAL_ERR_REVISION);
    EXPECT(info.status == SHOAL_ERR_REVISION && strstr(info.message, "ahead") != NULL);
    /* Every member (the only one) was refused, so nothing changed and the epoch stays; a step
     * boundary after an error is still the usual way on. */
    EXPECT(shoal_update_topology(comm, -1) == SHOAL_OK);
    state.revision = 9;
    EXPECT(shoal_sync_shared_state(comm, &state, -1, NULL, NULL) == SHOAL_OK);
    tensors[1].name = "weights"; /* the same name twice */
    EXPECT(shoal_sync_shared_state(comm, &state, -1, &info, NULL) == SHOAL_ERR_INVALID_ARGUMENT);
    tensors[1].name = NULL;
    EXPECT(shoal_sync_shared_state(comm, &state, -1, NULL, NULL) == SHOAL_ERR_INVALID_ARGUMENT);
    EXPECT(shoal_sync_shared_state(comm, NULL, -1, NULL, NULL) == SHOAL_ERR_INVALID_ARGUMENT);
  }
  EXPECT(shoal_leave(comm) == SHOAL_OK);
  EXPECT(shoal_all_reduce(comm, send, recv, 5, SHOAL_F32, SHOAL_SUM, 0, -1, NULL) ==
         SHOAL_ERR_CLOSED);
  shoal_comm_destroy(comm);
  shoal_comm_destroy(NULL);
  if (failures == 0) printf("c99 api test: all expectations met\n");
  return failures == 0 ? 0 : 1;
}
