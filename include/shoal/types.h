/* shoal: status codes, data types and reduction ops shared by the C and C++ APIs.
 *
 * This header is C99 and C++ compatible. Values are part of the ABI: never renumber, only append.
 */
#ifndef SHOAL_TYPES_H_
#define SHOAL_TYPES_H_

#ifdef __cplusplus
extern "C" {
#endif

/* In C++ the enums get a fixed underlying type, so that any int a C caller passes is a valid value
 * (range-checked by shoal) rather than undefined behaviour. */
#ifdef __cplusplus
#define SHOAL_ENUM_INT : int
#else
#define SHOAL_ENUM_INT
#endif

/* Every shoal call returns one of these. SHOAL_OK is 0; everything else is an error that
 * shoal_strerror() names. Errors of a collective that a peer failure caused carry the lost
 * peer's id as well (see shoal_op_result in shoal.h). */
typedef enum shoal_status SHOAL_ENUM_INT {
  SHOAL_OK = 0,
  SHOAL_ERR_INVALID_ARGUMENT = 1, /* a bad argument: null pointer, unknown dtype, count too large */
  SHOAL_ERR_TIMEOUT = 2,          /* a deadline passed (the lost peer names who was waited for) */
  SHOAL_ERR_PEER_LOST = 3,        /* a member died or its link broke during the operation */
  SHOAL_ERR_PEER_LEFT = 4,        /* a member left the group while the operation ran */
  SHOAL_ERR_COORDINATOR_LOST = 5, /* the coordinator connection is gone or silent */
  SHOAL_ERR_REJECTED = 6,         /* the coordinator refused this peer (duplicate id, full, version) */
  SHOAL_ERR_PROTOCOL = 7,         /* a malformed, oversized or out-of-order message */
  SHOAL_ERR_MISMATCH = 8,         /* members disagree on an operation (count, dtype, op) */
  SHOAL_ERR_NOT_MEMBER = 9,       /* this peer is not (or no longer) a member of the group */
  SHOAL_ERR_EPOCH_CHANGED = 10,   /* the epoch ended under the operation (topology update) */
  SHOAL_ERR_IO = 11,              /* a local OS error (bind, listen, resolve) */
  SHOAL_ERR_CLOSED = 12,          /* the communicator is closed */
  SHOAL_ERR_INTERNAL = 13,        /* a bug in shoal: please report it */
  SHOAL_ERR_AUTH = 14,            /* authentication failed (wrong or missing group secret) */
  SHOAL_ERR_INTEGRITY = 15,       /* received bytes did not match the hash they were sent for */
  SHOAL_ERR_REVISION = 16         /* a shared-state revision broke the one-per-step rule */
} shoal_status;
#define SHOAL_STATUS_COUNT 17

/* Element types of tensors. f16 is IEEE 754 binary16, bf16 is bfloat16; both are reduced in f32 and
 * rounded to nearest-even once per step. Integer sums and products wrap modulo 2^bits. */
typedef enum shoal_dtype SHOAL_ENUM_INT {
  SHOAL_F32 = 0,
  SHOAL_F64 = 1,
  SHOAL_F16 = 2,
  SHOAL_BF16 = 3,
  SHOAL_I8 = 4,
  SHOAL_I16 = 5,
  SHOAL_I32 = 6,
  SHOAL_I64 = 7,
  SHOAL_U8 = 8,
  SHOAL_U16 = 9,
  SHOAL_U32 = 10,
  SHOAL_U64 = 11
} shoal_dtype;
#define SHOAL_DTYPE_COUNT 12

/* Reduction ops. AVG is SUM divided by the number of members, computed once by the owner of each
 * chunk (integers: truncating division), so every member ends with the same bits. */
typedef enum shoal_reduce_op SHOAL_ENUM_INT {
  SHOAL_SUM = 0,
  SHOAL_AVG = 1,
  SHOAL_PROD = 2,
  SHOAL_MIN = 3,
  SHOAL_MAX = 4
} shoal_reduce_op;
#define SHOAL_REDUCE_OP_COUNT 5

/* A static string naming the status, e.g. "peer lost". Never NULL. */
const char* shoal_strerror(shoal_status status);

#ifdef __cplusplus
}
#endif

#endif /* SHOAL_TYPES_H_ */
