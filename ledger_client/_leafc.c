/* The compiled hot path of the record leaves and the Merkle tree (issue #15).
 *
 * Byte for byte the same results as the pure-Python functions in ledger_client/_format.py,
 * ledger_client/_outbox.py (_commit_rows, unstorable) and control/_telemetry.py
 * (docs/compiled-path.md; tests/test_leafc.py and tests/test_leafc_telemetry.py check it):
 *
 *   keccak256(data) -> bytes                      Keccak-256 (the original padding 0x01, as
 *                                                 Ethereum uses it; not SHA3-256)
 *   leaf_of_body(body) -> bytes                   keccak256(keccak256(body))
 *   merkle_root(leaves) -> bytes                  sorted-pair tree, odd node promoted
 *   commit_readings(records, first_seq, gateway_id, reading_type)
 *       -> (committed, rows) | None               the outbox's commit of a chunk of readings;
 *                                                 None: "not the fast path, do it in Python"
 *   reading_insert_params(rows, k)
 *       -> [[params of k rows], ...] | None      the bind parameters of the outbox's insert of
 *                                                 reading rows, k rows to a statement, without
 *                                                 kind and extra (literals in the statement);
 *                                                 None: "not all reading rows, bind them all"
 *   all_storable(readings, reading_type) -> bool  True: every reading passes
 *                                                 ledger_client._outbox.unstorable; False: one
 *                                                 does not, or "cannot tell, screen each"
 *   telemetry_json(gateway_id, readings, signatures, reading_type)
 *       -> bytes | None                           control/_telemetry.py's live telemetry
 *                                                 message; None: "do it in Python"
 *
 * Plain CPython C API, no dependency. Keccak-f[1600] written from the public specification
 * (FIPS 202 / the Keccak reference): one round written out lane by lane (theta, rho and pi,
 * chi, iota), 25 lanes kept in local variables, 6 of them complemented so that chi needs
 * fewer NOTs (the "lane complementing" of the Keccak implementation overview). Lanes are read
 * and written little-endian byte by byte, so the code is right on any byte order.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include "../mrv_core/_slots.h"
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* ------------------------------------------------------------------ Keccak-f[1600] */

static const uint64_t RC[24] = {
    0x0000000000000001ULL, 0x0000000000008082ULL, 0x800000000000808aULL, 0x8000000080008000ULL,
    0x000000000000808bULL, 0x0000000080000001ULL, 0x8000000080008081ULL, 0x8000000000008009ULL,
    0x000000000000008aULL, 0x0000000000000088ULL, 0x0000000080008009ULL, 0x000000008000000aULL,
    0x000000008000808bULL, 0x800000000000008bULL, 0x8000000000008089ULL, 0x8000000000008003ULL,
    0x8000000000008002ULL, 0x8000000000000080ULL, 0x000000000000800aULL, 0x800000008000000aULL,
    0x8000000080008081ULL, 0x8000000000008080ULL, 0x0000000080000001ULL, 0x8000000080008008ULL,
};

#define ROL64(x, n) (((x) << (n)) | ((x) >> (64 - (n))))

/* The permutation on state s (lane x + 5y at s[x + 5y]), for lanes of type T: uint64_t (one
 * state), or a vector of 4 uint64_t (4 states side by side, lane k of state j in element j of
 * s[k]; below). SPLAT(c) is the round constant as a T. One body, so the kernels cannot drift. */
#define KECCAKF_BODY(T, SPLAT)                                                              \
    T a0 = s[0], a1 = s[1], a2 = s[2], a3 = s[3], a4 = s[4];                                \
    T a5 = s[5], a6 = s[6], a7 = s[7], a8 = s[8], a9 = s[9];                                \
    T a10 = s[10], a11 = s[11], a12 = s[12], a13 = s[13], a14 = s[14];                      \
    T a15 = s[15], a16 = s[16], a17 = s[17], a18 = s[18], a19 = s[19];                      \
    T a20 = s[20], a21 = s[21], a22 = s[22], a23 = s[23], a24 = s[24];                      \
    T b0, b1, b2, b3, b4, b5, b6, b7, b8, b9, b10, b11, b12, b13, b14, b15, b16, b17,       \
             b18, b19, b20, b21, b22, b23, b24;                                             \
    T c0, c1, c2, c3, c4, d0, d1, d2, d3, d4;                                               \
    int round;                                                                              \
    /* lane complementing: 6 lanes are kept complemented through the rounds, so chi needs 5 \
     * NOTs instead of 25 (the Keccak team's implementation overview, section 2.2) */       \
    a1 = ~a1; a2 = ~a2; a8 = ~a8; a12 = ~a12; a17 = ~a17; a20 = ~a20;                       \
    for (round = 0; round < 24; round++) {                                                  \
    /* theta */                                                                             \
    c0 = a0 ^ a5 ^ a10 ^ a15 ^ a20;                                                         \
    c1 = a1 ^ a6 ^ a11 ^ a16 ^ a21;                                                         \
    c2 = a2 ^ a7 ^ a12 ^ a17 ^ a22;                                                         \
    c3 = a3 ^ a8 ^ a13 ^ a18 ^ a23;                                                         \
    c4 = a4 ^ a9 ^ a14 ^ a19 ^ a24;                                                         \
    d0 = c4 ^ ROL64(c1, 1);                                                                 \
    d1 = c0 ^ ROL64(c2, 1);                                                                 \
    d2 = c1 ^ ROL64(c3, 1);                                                                 \
    d3 = c2 ^ ROL64(c4, 1);                                                                 \
    d4 = c3 ^ ROL64(c0, 1);                                                                 \
    /* rho and pi: b[x', y'] = rot(a[x, y] ^ d[x], r[x, y]) with (x', y') = (y, 2x + 3y) */ \
    b0 = a0 ^ d0;                                                                           \
    b10 = ROL64(a1 ^ d1, 1);                                                                \
    b20 = ROL64(a2 ^ d2, 62);                                                               \
    b5 = ROL64(a3 ^ d3, 28);                                                                \
    b15 = ROL64(a4 ^ d4, 27);                                                               \
    b16 = ROL64(a5 ^ d0, 36);                                                               \
    b1 = ROL64(a6 ^ d1, 44);                                                                \
    b11 = ROL64(a7 ^ d2, 6);                                                                \
    b21 = ROL64(a8 ^ d3, 55);                                                               \
    b6 = ROL64(a9 ^ d4, 20);                                                                \
    b7 = ROL64(a10 ^ d0, 3);                                                                \
    b17 = ROL64(a11 ^ d1, 10);                                                              \
    b2 = ROL64(a12 ^ d2, 43);                                                               \
    b12 = ROL64(a13 ^ d3, 25);                                                              \
    b22 = ROL64(a14 ^ d4, 39);                                                              \
    b23 = ROL64(a15 ^ d0, 41);                                                              \
    b8 = ROL64(a16 ^ d1, 45);                                                               \
    b18 = ROL64(a17 ^ d2, 15);                                                              \
    b3 = ROL64(a18 ^ d3, 21);                                                               \
    b13 = ROL64(a19 ^ d4, 8);                                                               \
    b14 = ROL64(a20 ^ d0, 18);                                                              \
    b24 = ROL64(a21 ^ d1, 2);                                                               \
    b9 = ROL64(a22 ^ d2, 61);                                                               \
    b19 = ROL64(a23 ^ d3, 56);                                                              \
    b4 = ROL64(a24 ^ d4, 14);                                                               \
    /* chi, on the complemented lanes: a[x] = b[x] ^ (~b[x+1] & b[x+2]) rewritten */        \
    a0 = b0 ^ (b1 | b2);                                                                    \
    a1 = b1 ^ (~b2 | b3);                                                                   \
    a2 = b2 ^ (b3 & b4);                                                                    \
    a3 = b3 ^ (b4 | b0);                                                                    \
    a4 = b4 ^ (b0 & b1);                                                                    \
    a5 = b5 ^ (b6 | b7);                                                                    \
    a6 = b6 ^ (b7 & b8);                                                                    \
    a7 = b7 ^ (b8 | ~b9);                                                                   \
    a8 = b8 ^ (b9 | b5);                                                                    \
    a9 = b9 ^ (b5 & b6);                                                                    \
    a10 = b10 ^ (b11 | b12);                                                                \
    a11 = b11 ^ (b12 & b13);                                                                \
    a12 = b12 ^ (~b13 & b14);                                                               \
    a13 = ~b13 ^ (b14 | b10);                                                               \
    a14 = b14 ^ (b10 & b11);                                                                \
    a15 = b15 ^ (b16 & b17);                                                                \
    a16 = b16 ^ (b17 | b18);                                                                \
    a17 = b17 ^ (~b18 | b19);                                                               \
    a18 = ~b18 ^ (b19 & b15);                                                               \
    a19 = b19 ^ (b15 | b16);                                                                \
    a20 = b20 ^ (~b21 & b22);                                                               \
    a21 = ~b21 ^ (b22 | b23);                                                               \
    a22 = b22 ^ (b23 & b24);                                                                \
    a23 = b23 ^ (b24 | b20);                                                                \
    a24 = b24 ^ (b20 & b21);                                                                \
    /* iota */                                                                              \
    a0 ^= SPLAT(RC[round]);                                                                 \
    }                                                                                       \
    a1 = ~a1; a2 = ~a2; a8 = ~a8; a12 = ~a12; a17 = ~a17; a20 = ~a20;                       \
    s[0] = a0; s[1] = a1; s[2] = a2; s[3] = a3; s[4] = a4;                                  \
    s[5] = a5; s[6] = a6; s[7] = a7; s[8] = a8; s[9] = a9;                                  \
    s[10] = a10; s[11] = a11; s[12] = a12; s[13] = a13; s[14] = a14;                        \
    s[15] = a15; s[16] = a16; s[17] = a17; s[18] = a18; s[19] = a19;                        \
    s[20] = a20; s[21] = a21; s[22] = a22; s[23] = a23; s[24] = a24;                        \

#define SPLAT_SCALAR(c) (c)

static void
keccakf(uint64_t s[25])
{
    KECCAKF_BODY(uint64_t, SPLAT_SCALAR)
}

static inline uint64_t
load64(const unsigned char *p)
{
    return (uint64_t)p[0] | ((uint64_t)p[1] << 8) | ((uint64_t)p[2] << 16) |
           ((uint64_t)p[3] << 24) | ((uint64_t)p[4] << 32) | ((uint64_t)p[5] << 40) |
           ((uint64_t)p[6] << 48) | ((uint64_t)p[7] << 56);
}

static inline void
store64(unsigned char *p, uint64_t v)
{
    int i;
    for (i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

#define RATE 136 /* bytes: 1600 - 2 * 256 bits */

/* out = Keccak-256(in[0..len)) */
static void
keccak256_raw(const unsigned char *in, size_t len, unsigned char out[32])
{
    uint64_t s[25];
    unsigned char last[RATE];
    size_t i, rest;
    memset(s, 0, sizeof s);
    while (len >= RATE) {
        for (i = 0; i < RATE / 8; i++)
            s[i] ^= load64(in + 8 * i);
        keccakf(s);
        in += RATE;
        len -= RATE;
    }
    rest = len;
    memset(last, 0, RATE);
    if (rest)
        memcpy(last, in, rest);
    last[rest] ^= 0x01;
    last[RATE - 1] ^= 0x80;
    for (i = 0; i < RATE / 8; i++)
        s[i] ^= load64(last + 8 * i);
    keccakf(s);
    for (i = 0; i < 4; i++)
        store64(out + 8 * i, s[i]);
}

/* out = Keccak-256(a || b), a and b 32 bytes each (one Merkle node). */
static void
keccak256_pair(const unsigned char *a, const unsigned char *b, unsigned char out[32])
{
    uint64_t s[25];
    int i;
    memset(s, 0, sizeof s);
    for (i = 0; i < 4; i++) {
        s[i] = load64(a + 8 * i);
        s[4 + i] = load64(b + 8 * i);
    }
    s[8] = 0x01;                   /* padding right after the 64 bytes */
    s[16] = 0x8000000000000000ULL; /* last byte of the rate */
    keccakf(s);
    for (i = 0; i < 4; i++)
        store64(out + 8 * i, s[i]);
}

/* out = keccak256(keccak256(body)) */
static void
leaf_raw(const unsigned char *body, size_t len, unsigned char out[32])
{
    unsigned char inner[32];
    uint64_t s[25];
    int i;
    keccak256_raw(body, len, inner);
    memset(s, 0, sizeof s);
    for (i = 0; i < 4; i++)
        s[i] = load64(inner + 8 * i);
    s[4] = 0x01;
    s[16] = 0x8000000000000000ULL;
    keccakf(s);
    for (i = 0; i < 4; i++)
        store64(out + 8 * i, s[i]);
}

/* ------------------------------------------------------------------ 4 states at once */

/* Independent Keccak-f[1600] states in the lanes of vectors (GCC's vector extensions: the same
 * C operators, on every element): 4 states in 256-bit vectors, 8 in 512-bit ones. The leaves of
 * a chunk and the nodes of a tree level are independent hashes: 4 of them cost about one
 * permutation's time on a CPU with AVX2 (about 3 times the throughput), less with AVX-512 (its
 * 64-bit rotate and three-input logic), and 8 in 512-bit registers less again. Kernels:
 *   "scalar"  one state at a time (every build, the reference)
 *   "vector", "vector8"  4 / 8 states, the compiler's generic code for the target (any GCC;
 *             for the tests: the grouping by 8 is tested on any CPU)
 *   "avx2", "avx512"  4 states, built for those instruction sets (x86-64 GCC), used only when
 *             the CPU and OS support them
 *   "avx512x8"  8 states in 512-bit registers, and 4 with "avx512" for what is left
 * The best available is chosen at import; `use_kernel` switches (the tests run each). */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 8
#define HAVE_KECCAK4 1
typedef uint64_t v4u64 __attribute__((vector_size(32)));
typedef uint64_t v8u64 __attribute__((vector_size(64)));
#define SPLAT_V4(c) ((v4u64){(c), (c), (c), (c)})
#define SPLAT_V8(c) ((v8u64){(c), (c), (c), (c), (c), (c), (c), (c)})
typedef void (*keccakf4_fn)(v4u64 s[25]);
typedef void (*keccakf8_fn)(v8u64 s[25]);

static void
keccakf4_vector(v4u64 s[25])
{
    KECCAKF_BODY(v4u64, SPLAT_V4)
}

static void
keccakf8_vector(v8u64 s[25])
{
    KECCAKF_BODY(v8u64, SPLAT_V8)
}

#if defined(__x86_64__)
#define HAVE_KECCAK4_X86 1
__attribute__((target("avx2"))) static void
keccakf4_avx2(v4u64 s[25])
{
    KECCAKF_BODY(v4u64, SPLAT_V4)
}

__attribute__((target("avx2,avx512f,avx512vl"))) static void
keccakf4_avx512(v4u64 s[25])
{
    KECCAKF_BODY(v4u64, SPLAT_V4)
}

__attribute__((target("avx2,avx512f,avx512vl"))) static void
keccakf8_avx512(v8u64 s[25])
{
    KECCAKF_BODY(v8u64, SPLAT_V8)
}
#endif

static keccakf4_fn keccakf4 = NULL; /* NULL: the scalar kernel */
static keccakf8_fn keccakf8 = NULL; /* NULL: no 8-state kernel (4 at a time, or scalar) */
#endif

static const char *kernel_name = "scalar";

/* Select a kernel by name: 1 done, 0 not available here. */
static int
select_kernel(const char *name)
{
    if (strcmp(name, "scalar") == 0) {
#ifdef HAVE_KECCAK4
        keccakf4 = NULL;
        keccakf8 = NULL;
#endif
        kernel_name = "scalar";
        return 1;
    }
#ifdef HAVE_KECCAK4
    if (strcmp(name, "vector") == 0 || strcmp(name, "vector8") == 0) {
        keccakf4 = keccakf4_vector;
        keccakf8 = name[6] == '8' ? keccakf8_vector : NULL;
        kernel_name = name[6] == '8' ? "vector8" : "vector";
        return 1;
    }
#ifdef HAVE_KECCAK4_X86
    __builtin_cpu_init();
    if (strcmp(name, "avx2") == 0 && __builtin_cpu_supports("avx2")) {
        keccakf4 = keccakf4_avx2;
        keccakf8 = NULL;
        kernel_name = "avx2";
        return 1;
    }
    if ((strcmp(name, "avx512") == 0 || strcmp(name, "avx512x8") == 0) &&
        __builtin_cpu_supports("avx2") && __builtin_cpu_supports("avx512f") &&
        __builtin_cpu_supports("avx512vl")) {
        keccakf4 = keccakf4_avx512;
        keccakf8 = name[6] == 'x' ? keccakf8_avx512 : NULL;
        kernel_name = name[6] == 'x' ? "avx512x8" : "avx512";
        return 1;
    }
#endif
#endif
    return 0;
}

/* The number of Keccak-256 permutations of a message of len bytes (the padding's block
 * included). */
static inline size_t
n_blocks(size_t len)
{
    return len / RATE + 1;
}

#ifdef HAVE_KECCAK4
/* keccak256_x<W>: outs[j] = Keccak-256(ins[j][0..len_j)) for W messages of the same number of
 * blocks; keccak256_short_x<W>: outs[j] = Keccak-256(a[j] || b[j]) for W pairs of 32-byte
 * inputs (b[0] NULL: of a[j] alone, the outer hash of a leaf). One definition for each width,
 * so they cannot drift. */
#define DEFINE_KECCAK_XN(W, VT, SPLAT, PERMUTE)                                                \
    static void keccak256_x##W(const unsigned char *const ins[W], const size_t lens[W],          \
                               size_t nb, unsigned char *const outs[W])                          \
    {                                                                                            \
        VT s[25];                                                                                \
        unsigned char last[W][RATE];                                                             \
        const unsigned char *p[W];                                                               \
        size_t b, i;                                                                             \
        int j;                                                                                   \
        memset(s, 0, sizeof s);                                                                  \
        for (j = 0; j < W; j++) {                                                                \
            size_t rest = lens[j] - (nb - 1) * RATE;                                             \
            memset(last[j], 0, RATE);                                                            \
            if (rest)                                                                            \
                memcpy(last[j], ins[j] + (nb - 1) * RATE, rest);                                 \
            last[j][rest] ^= 0x01;                                                               \
            last[j][RATE - 1] ^= 0x80;                                                           \
        }                                                                                        \
        for (b = 0; b < nb; b++) {                                                               \
            for (j = 0; j < W; j++)                                                              \
                p[j] = b + 1 < nb ? ins[j] + b * RATE : last[j];                                 \
            for (i = 0; i < RATE / 8; i++) {                                                     \
                VT v;                                                                            \
                for (j = 0; j < W; j++)                                                          \
                    v[j] = load64(p[j] + 8 * i);                                                 \
                s[i] ^= v;                                                                       \
            }                                                                                    \
            PERMUTE(s);                                                                          \
        }                                                                                        \
        for (j = 0; j < W; j++)                                                                  \
            for (i = 0; i < 4; i++)                                                              \
                store64(outs[j] + 8 * i, s[i][j]);                                               \
    }                                                                                            \
                                                                                                 \
    static void keccak256_short_x##W(const unsigned char *const a[W],                            \
                                     const unsigned char *const b[W], unsigned char *const outs[W]) \
    {                                                                                            \
        VT s[25];                                                                                \
        int i, j;                                                                                \
        memset(s, 0, sizeof s);                                                                  \
        for (i = 0; i < 4; i++) {                                                                \
            for (j = 0; j < W; j++)                                                              \
                s[i][j] = load64(a[j] + 8 * i);                                                  \
            if (b[0] != NULL)                                                                    \
                for (j = 0; j < W; j++)                                                          \
                    s[4 + i][j] = load64(b[j] + 8 * i);                                          \
        }                                                                                        \
        s[b[0] != NULL ? 8 : 4] = SPLAT(0x01);                 /* padding after the input */     \
        s[16] = SPLAT(0x8000000000000000ULL);                  /* last byte of the rate */       \
        PERMUTE(s);                                                                              \
        for (j = 0; j < W; j++)                                                                  \
            for (i = 0; i < 4; i++)                                                              \
                store64(outs[j] + 8 * i, s[i][j]);                                               \
    }

DEFINE_KECCAK_XN(4, v4u64, SPLAT_V4, keccakf4)
DEFINE_KECCAK_XN(8, v8u64, SPLAT_V8, keccakf8)
#endif

/* leaves + 32i = keccak256(keccak256(body i)) for n bodies (body i at bodies + offs[i], lens[i]
 * bytes; offs and lens read with a stride of `stride` bytes, so an array of structs serves).
 * Bodies of the same number of blocks are hashed 8 at a time by an 8-state kernel, then 4 at a
 * time by the 4-state one. No Python object is touched: callable without the GIL. Returns -1
 * when out of memory (nothing written is to be used), else 0. */
#define MAX_GROUPED_BLOCKS 32 /* longer bodies (over 4 KB, none in practice) one at a time */
static int
leaves_raw(const unsigned char *bodies, const size_t *offs, const size_t *lens,
           size_t stride, Py_ssize_t n, unsigned char *leaves)
{
#define OFF(i) (*(const size_t *)((const char *)offs + (size_t)(i) * stride))
#define LEN(i) (*(const size_t *)((const char *)lens + (size_t)(i) * stride))
    Py_ssize_t i;
#ifdef HAVE_KECCAK4
    if (keccakf4 != NULL && n >= 4) {
        /* inner hashes: the bodies grouped by their number of blocks (a counting sort) */
        Py_ssize_t start[MAX_GROUPED_BLOCKS + 2], *order;
        unsigned char *inner = (unsigned char *)PyMem_RawMalloc((size_t)n * 32);
        size_t nb;
        order = (Py_ssize_t *)PyMem_RawMalloc((size_t)n * sizeof(Py_ssize_t));
        if (inner == NULL || order == NULL) {
            PyMem_RawFree(inner);
            PyMem_RawFree(order);
            return -1;
        }
        memset(start, 0, sizeof start);
        for (i = 0; i < n; i++) {
            nb = n_blocks(LEN(i));
            start[(nb <= MAX_GROUPED_BLOCKS ? nb : 0) + 1]++;
        }
        for (nb = 1; nb < MAX_GROUPED_BLOCKS + 2; nb++)
            start[nb] += start[nb - 1];
        for (i = 0; i < n; i++) {
            nb = n_blocks(LEN(i));
            order[start[nb <= MAX_GROUPED_BLOCKS ? nb : 0]++] = i;
        }
        /* start[k] is now the end of group k; group 0 (long bodies) one at a time */
        for (i = 0; i < start[0]; i++)
            keccak256_raw(bodies + OFF(order[i]), LEN(order[i]), inner + 32 * order[i]);
/* the W bodies order[k .. k + W) of the group of nb blocks */
#define INNER_XN(W)                                                                           \
    do {                                                                                      \
        const unsigned char *ins[W];                                                          \
        size_t ls[W];                                                                         \
        unsigned char *outs[W];                                                               \
        int j;                                                                                \
        for (j = 0; j < W; j++) {                                                             \
            Py_ssize_t x = order[k + j];                                                      \
            ins[j] = bodies + OFF(x);                                                         \
            ls[j] = LEN(x);                                                                   \
            outs[j] = inner + 32 * x;                                                         \
        }                                                                                     \
        keccak256_x##W(ins, ls, nb, outs);                                                    \
    } while (0)
        for (nb = 1; nb <= MAX_GROUPED_BLOCKS; nb++) {
            Py_ssize_t k = start[nb - 1], end = start[nb];
            if (keccakf8 != NULL)
                for (; k + 8 <= end; k += 8)
                    INNER_XN(8);
            for (; k + 4 <= end; k += 4)
                INNER_XN(4);
            for (; k < end; k++)
                keccak256_raw(bodies + OFF(order[k]), LEN(order[k]), inner + 32 * order[k]);
        }
#undef INNER_XN
/* the outer hashes of leaves i .. i + W */
#define OUTER_XN(W)                                                                           \
    do {                                                                                      \
        const unsigned char *a[W], *b[W];                                                     \
        unsigned char *outs[W];                                                               \
        int j;                                                                                \
        for (j = 0; j < W; j++) {                                                             \
            a[j] = inner + 32 * (i + j);                                                      \
            b[j] = NULL;                                                                      \
            outs[j] = leaves + 32 * (i + j);                                                  \
        }                                                                                     \
        keccak256_short_x##W(a, b, outs);                                                     \
    } while (0)
        i = 0;
        if (keccakf8 != NULL)
            for (; i + 8 <= n; i += 8)
                OUTER_XN(8);
        for (; i + 4 <= n; i += 4)
            OUTER_XN(4);
#undef OUTER_XN
        for (; i < n; i++)
            keccak256_raw(inner + 32 * i, 32, leaves + 32 * i);
        PyMem_RawFree(inner);
        PyMem_RawFree(order);
        return 0;
    }
#endif
    for (i = 0; i < n; i++)
        leaf_raw(bodies + OFF(i), LEN(i), leaves + 32 * i);
    return 0;
#undef OFF
#undef LEN
}

/* One level of the sorted-pair tree: buf holds m nodes of 32 bytes; node i of the next level
 * (written at buf + 32i) is the hash of nodes 2i and 2i+1 in ascending order; an odd last node
 * is promoted. Returns the next level's size. */
static Py_ssize_t
merkle_level(unsigned char *buf, Py_ssize_t m)
{
    Py_ssize_t half = m / 2, i = 0;
#ifdef HAVE_KECCAK4
    /* W pairs read (bytes 64i .. 64(i + W)) before their W results are written (bytes
     * 32i .. 32(i + W)): nothing unread is overwritten */
#define PAIRS_XN(W)                                                                           \
    do {                                                                                      \
        const unsigned char *a[W], *b[W];                                                     \
        unsigned char *outs[W];                                                               \
        int j;                                                                                \
        for (j = 0; j < W; j++) {                                                             \
            const unsigned char *x = buf + 64 * (i + j), *y = x + 32;                         \
            int lt = memcmp(x, y, 32) < 0;                                                    \
            a[j] = lt ? x : y;                                                                \
            b[j] = lt ? y : x;                                                                \
            outs[j] = buf + 32 * (i + j);                                                     \
        }                                                                                     \
        keccak256_short_x##W(a, b, outs);                                                     \
    } while (0)
    if (keccakf8 != NULL)
        for (; i + 8 <= half; i += 8)
            PAIRS_XN(8);
    if (keccakf4 != NULL)
        for (; i + 4 <= half; i += 4)
            PAIRS_XN(4);
#undef PAIRS_XN
#endif
    for (; i < half; i++) {
        unsigned char *a = buf + 64 * i, *b = a + 32;
        if (memcmp(a, b, 32) < 0)
            keccak256_pair(a, b, buf + 32 * i);
        else
            keccak256_pair(b, a, buf + 32 * i);
    }
    if (m % 2) {
        memmove(buf + 32 * half, buf + 32 * (m - 1), 32);
        return half + 1;
    }
    return half;
}

/* ------------------------------------------------------------------ keccak256, leaf_of_body */

static PyObject *
leafc_keccak256(PyObject *module, PyObject *arg)
{
    Py_buffer view;
    unsigned char out[32];
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    keccak256_raw((const unsigned char *)view.buf, (size_t)view.len, out);
    PyBuffer_Release(&view);
    return PyBytes_FromStringAndSize((const char *)out, 32);
}

static PyObject *
leafc_leaf_of_body(PyObject *module, PyObject *arg)
{
    Py_buffer view;
    unsigned char out[32];
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    leaf_raw((const unsigned char *)view.buf, (size_t)view.len, out);
    PyBuffer_Release(&view);
    return PyBytes_FromStringAndSize((const char *)out, 32);
}

/* ------------------------------------------------------------------ merkle_root */

/* Leaves: a list or tuple of 32-byte bytes objects (else TypeError / ValueError; the caller in
 * _format.py then runs the pure function, which takes any bytes-like leaves). */
static PyObject *
leafc_merkle_root(PyObject *module, PyObject *arg)
{
    Py_ssize_t n, i, m;
    PyObject **items;
    unsigned char *buf;
    PyObject *res;
    if (!PyList_Check(arg) && !PyTuple_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "merkle_root takes a list or tuple of leaves");
        return NULL;
    }
    n = PySequence_Fast_GET_SIZE(arg);
    items = PySequence_Fast_ITEMS(arg);
    for (i = 0; i < n; i++) {
        if (!PyBytes_Check(items[i])) {
            PyErr_Format(PyExc_TypeError, "leaf %zd is not bytes", i);
            return NULL;
        }
        if (PyBytes_GET_SIZE(items[i]) != 32) {
            PyErr_Format(PyExc_ValueError, "leaf %zd has %zd bytes, not 32", i,
                         PyBytes_GET_SIZE(items[i]));
            return NULL;
        }
    }
    if (n == 0) {
        static const char zero[32] = {0};
        return PyBytes_FromStringAndSize(zero, 32);
    }
    if (n == 1)
        return Py_NewRef(items[0]);
    buf = (unsigned char *)PyMem_Malloc((size_t)n * 32);
    if (buf == NULL)
        return PyErr_NoMemory();
    for (i = 0; i < n; i++)
        memcpy(buf + 32 * i, PyBytes_AS_STRING(items[i]), 32);
    /* the leaves are copied: the tree is built without the GIL */
    Py_BEGIN_ALLOW_THREADS
    m = n;
    while (m > 1)
        m = merkle_level(buf, m);
    Py_END_ALLOW_THREADS
    res = PyBytes_FromStringAndSize((const char *)buf, 32);
    PyMem_Free(buf);
    return res;
}

/* header_fields(keys) -> (first_seq, last_seq, min_ts, max_ts, root) of a batch's keys, a
 * list of (seq, ts_ns, leaf) tuples in seq order (`build_header`, ledger_client/_format.py):
 * one pass instead of Python's lists of seqs, times and leaves. None when the keys are not
 * all that (an exact tuple of an int seq, an int time in 64 bits and a 32-byte bytes leaf),
 * are empty, or their seqs are not one contiguous run: then the pure path decides and raises
 * what it raises. */
/* header_fields lets go of the GIL after every this many keys (a power of two) */
#define HEADER_GIL_EVERY 4096

static PyObject *
leafc_header_fields(PyObject *module, PyObject *arg)
{
    Py_ssize_t n, i, m;
    PyObject *const *items;
    unsigned char *buf;
    long long first = 0, min_ts = 0, max_ts = 0;
    PyObject *root;
    if (!PyList_CheckExact(arg))
        Py_RETURN_NONE;
    n = PyList_GET_SIZE(arg);
    if (n == 0)
        Py_RETURN_NONE;
    items = PySequence_Fast_ITEMS(arg);
    buf = (unsigned char *)PyMem_Malloc((size_t)n * 32);
    if (buf == NULL)
        return PyErr_NoMemory();
    for (i = 0; i < n; i++) {
        PyObject *k = items[i], *seq, *ts, *leaf;
        long long sv, tv;
        int over = 0;
        if (!PyTuple_CheckExact(k) || PyTuple_GET_SIZE(k) < 3)
            goto pure;
        seq = PyTuple_GET_ITEM(k, 0);
        ts = PyTuple_GET_ITEM(k, 1);
        leaf = PyTuple_GET_ITEM(k, 2);
        if (!PyLong_CheckExact(seq) || !PyLong_CheckExact(ts) || !PyBytes_CheckExact(leaf) ||
            PyBytes_GET_SIZE(leaf) != 32)
            goto pure;
        sv = PyLong_AsLongLongAndOverflow(seq, &over);
        if (over || (sv == -1 && PyErr_Occurred()))
            goto pure;
        tv = PyLong_AsLongLongAndOverflow(ts, &over);
        if (over || (tv == -1 && PyErr_Occurred()))
            goto pure;
        if (i == 0) {
            first = sv;
            min_ts = max_ts = tv;
        } else {
            if (first > LLONG_MAX - i || sv != first + i)
                goto pure;
            if (tv < min_ts)
                min_ts = tv;
            if (tv > max_ts)
                max_ts = tv;
        }
        memcpy(buf + 32 * i, PyBytes_AS_STRING(leaf), 32);
        if ((i & (HEADER_GIL_EVERY - 1)) == HEADER_GIL_EVERY - 1 && i + 1 < n) {
            /* A batch's keys (up to 60,000, scattered in memory) took several ms to read: the
             * GIL is let go between pieces, so the event loop's thread is not held that long
             * (this runs in a worker thread). Nothing of the list is kept across: its items
             * are looked up again, and a list that changed meanwhile goes to the pure path. */
            Py_BEGIN_ALLOW_THREADS
            Py_END_ALLOW_THREADS
            if (PyList_GET_SIZE(arg) != n)
                goto pure;
            items = PySequence_Fast_ITEMS(arg);
        }
    }
    if (n == 1) {
        root = Py_NewRef(PyTuple_GET_ITEM(items[0], 2));
    } else {
        /* the leaves are copied: the tree is built without the GIL */
        Py_BEGIN_ALLOW_THREADS
        m = n;
        while (m > 1)
            m = merkle_level(buf, m);
        Py_END_ALLOW_THREADS
        root = PyBytes_FromStringAndSize((const char *)buf, 32);
    }
    PyMem_Free(buf);
    if (root == NULL)
        return NULL;
    return Py_BuildValue("(LLLLN)", first, first + (long long)(n - 1), min_ts, max_ts, root);
pure:
    PyErr_Clear();
    PyMem_Free(buf);
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------ commit_readings */


static PyTypeObject *reading_type = NULL; /* the type the offsets below belong to */
static Py_ssize_t field_offset[N_FIELDS];

/* The slot offsets of `type` (mrv_core/_slots.h). 1: usable; 0: not a Reading-shaped type
 * (never the fast path for it); -1: error. */
static int
learn_type(PyObject *type)
{
    return learn_type_into(type, &reading_type, field_offset);
}

/* a slot of obj, by the offsets `offs` (a local copy: a finalizer run by the garbage collector
 * during a call may call this module again with another type) */
#define SLOT(obj, f) (*(PyObject **)((char *)(obj) + offs[f]))

static inline void
put_u64(unsigned char *w, uint64_t v) /* a 32-byte big-endian word holding v */
{
    int i;
    memset(w, 0, 24);
    for (i = 0; i < 8; i++)
        w[24 + i] = (unsigned char)(v >> (56 - 8 * i));
}

static inline size_t
tail_len(Py_ssize_t n) /* length word + data padded to 32 */
{
    return 32 + (((size_t)n + 31) / 32) * 32;
}

static inline unsigned char *
put_tail(unsigned char *p, const char *s, Py_ssize_t n)
{
    size_t padded = (((size_t)n + 31) / 32) * 32;
    put_u64(p, (uint64_t)n);
    memcpy(p + 32, s, (size_t)n);
    memset(p + 32 + n, 0, padded - (size_t)n);
    return p + 32 + padded;
}

/* UTF-8 of an exact str, or NULL (not an exact str, or not encodable: no error set). */
static const char *
utf8_of(PyObject *s, Py_ssize_t *n)
{
    const char *u;
    if (!PyUnicode_CheckExact(s))
        return NULL;
    u = PyUnicode_AsUTF8AndSize(s, n);
    if (u == NULL)
        PyErr_Clear();
    return u;
}

/* What pass 1 takes from one record (strong references: a finalizer run by an allocation of
 * pass 3 cannot free them), for pass 2 (hashing, without the GIL) and pass 3 (the objects). */
typedef struct {
    PyObject *f[6]; /* point, ts, value, unit, source, quality */
    const char *p_u8, *u_u8, *s_u8;
    Py_ssize_t p_n, u_n, s_n;
    long long ts_v, q_v;
    uint64_t vbits;
    size_t off, len; /* the body's place in the bodies buffer */
} item_t;

/* Chunks of at least this many records are hashed with the GIL released (the caller may run
 * the commit in a worker thread: the event loop goes on meanwhile). */
#define HASH_WITHOUT_GIL_MIN 64

static PyObject *
leafc_commit_readings(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *records, *first_obj, *gw, *type;
    PyObject *seq_records = NULL, *committed = NULL, *rows = NULL, *result = NULL;
    PyObject *one = NULL;
    PyObject **items;
    item_t *it = NULL;
    unsigned char *bodies = NULL, *leaves = NULL;
    Py_ssize_t n, i, gw_len, held = 0;
    unsigned long long first;
    const char *gw_utf8;
    size_t total = 0;
    PyTypeObject *rt;
    Py_ssize_t offs[N_FIELDS];
    int known;

    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError,
                        "commit_readings(records, first_seq, gateway_id, reading_type)");
        return NULL;
    }
    records = args[0];
    first_obj = args[1];
    gw = args[2];
    type = args[3];

    if ((PyObject *)reading_type != type) {
        known = learn_type(type);
        if (known < 0)
            return NULL;
        if (known == 0)
            Py_RETURN_NONE;
    }
    rt = reading_type;
    memcpy(offs, field_offset, sizeof offs);
    if (!PyLong_CheckExact(first_obj))
        Py_RETURN_NONE;
    first = PyLong_AsUnsignedLongLong(first_obj);
    if (first == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    if (first == 0)
        Py_RETURN_NONE; /* not a committed seq: the pure path raises */
    gw_utf8 = utf8_of(gw, &gw_len);
    if (gw_utf8 == NULL || gw_len == 0)
        Py_RETURN_NONE;

    Py_INCREF(rt); /* kept alive through the call */
    Py_INCREF(gw);
    seq_records = PySequence_Tuple(records); /* a copy: the records stay as they are now */
    if (seq_records == NULL)
        goto error;
    n = PyTuple_GET_SIZE(seq_records);
    items = &PyTuple_GET_ITEM(seq_records, 0);
    if (n > 0 && (unsigned long long)(n - 1) > UINT64_MAX - first)
        goto not_fast; /* a seq beyond uint64 */
    it = (item_t *)PyMem_Calloc(n > 0 ? (size_t)n : 1, sizeof(item_t));
    if (it == NULL) {
        PyErr_NoMemory();
        goto error;
    }

    /* pass 1 (GIL): every record exactly a Reading with fields of the fast path; its fields
     * held, its body's length known. Else the whole chunk goes the pure way. */
    for (i = 0; i < n; i++) {
        PyObject *r = items[i];
        item_t *x = &it[i];
        int f, overflow;
        double v;
        if (Py_TYPE(r) != rt)
            goto not_fast;
        for (f = 0; f < N_FIELDS; f++)
            if (SLOT(r, f) == NULL)
                goto not_fast;
        x->f[0] = Py_NewRef(SLOT(r, F_POINT));
        x->f[1] = Py_NewRef(SLOT(r, F_TS));
        x->f[2] = Py_NewRef(SLOT(r, F_VALUE));
        x->f[3] = Py_NewRef(SLOT(r, F_UNIT));
        x->f[4] = Py_NewRef(SLOT(r, F_SOURCE));
        x->f[5] = Py_NewRef(SLOT(r, F_QUALITY));
        held = i + 1;
        if (!PyLong_CheckExact(x->f[1]) || !PyLong_CheckExact(x->f[5]) ||
            !PyFloat_CheckExact(x->f[2]))
            goto not_fast;
        x->ts_v = PyLong_AsLongLongAndOverflow(x->f[1], &overflow);
        if (overflow || (x->ts_v == -1 && PyErr_Occurred())) {
            PyErr_Clear();
            goto not_fast;
        }
        x->q_v = PyLong_AsLongLongAndOverflow(x->f[5], &overflow);
        if (overflow || x->q_v < 0 || x->q_v > 0xFFFFFFFFLL) {
            PyErr_Clear();
            goto not_fast;
        }
        if ((x->p_u8 = utf8_of(x->f[0], &x->p_n)) == NULL ||
            (x->u_u8 = utf8_of(x->f[3], &x->u_n)) == NULL ||
            (x->s_u8 = utf8_of(x->f[4], &x->s_n)) == NULL)
            goto not_fast;
        v = PyFloat_AS_DOUBLE(x->f[2]);
        if (v != v)
            x->vbits = 0x7FF8000000000000ULL; /* every NaN, one pattern */
        else if (v == 0.0)
            x->vbits = 0; /* -0.0 too */
        else
            memcpy(&x->vbits, &v, 8);
        x->off = total;
        x->len = 288 + tail_len(gw_len) + tail_len(x->p_n) + tail_len(x->u_n) + tail_len(x->s_n);
        total += x->len;
    }

    /* the bodies: abi.encode(uint8 1, string gw, uint64 seq, string pointId, int64 tsNs,
     * uint64 valueBits, string unit, uint32 quality, string source) */
    bodies = (unsigned char *)PyMem_RawMalloc(total > 0 ? total : 1);
    leaves = (unsigned char *)PyMem_RawMalloc(n > 0 ? (size_t)n * 32 : 1);
    if (bodies == NULL || leaves == NULL) {
        PyErr_NoMemory();
        goto error;
    }
    for (i = 0; i < n; i++) {
        item_t *x = &it[i];
        unsigned char *w = bodies + x->off, *t;
        size_t off_p = 288 + tail_len(gw_len);
        size_t off_u = off_p + tail_len(x->p_n);
        size_t off_s = off_u + tail_len(x->u_n);
        put_u64(w, 1);
        put_u64(w + 32, 288);
        put_u64(w + 64, first + (unsigned long long)i);
        put_u64(w + 96, off_p);
        put_u64(w + 128, (uint64_t)x->ts_v);
        if (x->ts_v < 0)
            memset(w + 128, 0xFF, 24); /* two's complement over 256 bits */
        put_u64(w + 160, x->vbits);
        put_u64(w + 192, off_u);
        put_u64(w + 224, (uint64_t)x->q_v);
        put_u64(w + 256, off_s);
        t = put_tail(w + 288, gw_utf8, gw_len);
        t = put_tail(t, x->p_u8, x->p_n);
        t = put_tail(t, x->u_u8, x->u_n);
        put_tail(t, x->s_u8, x->s_n);
    }

    /* pass 2: the leaves, from C memory only: without the GIL for a large chunk */
    if (n >= HASH_WITHOUT_GIL_MIN) {
        int failed;
        Py_BEGIN_ALLOW_THREADS
        failed = leaves_raw(bodies, &it[0].off, &it[0].len, sizeof(item_t), n, leaves);
        Py_END_ALLOW_THREADS
        if (failed) {
            PyErr_NoMemory();
            goto error;
        }
    } else if (leaves_raw(bodies, &it[0].off, &it[0].len, sizeof(item_t), n, leaves)) {
        PyErr_NoMemory();
        goto error;
    }

    /* pass 3 (GIL): the committed readings and their rows */
    committed = PyList_New(n);
    rows = PyList_New(n);
    one = PyLong_FromLong(1);
    if (committed == NULL || rows == NULL || one == NULL)
        goto error;
    for (i = 0; i < n; i++) {
        item_t *x = &it[i];
        PyObject *c, *row, *seq_obj, *leaf;
        c = rt->tp_alloc(rt, 0);
        if (c == NULL)
            goto error;
        PyList_SET_ITEM(committed, i, c); /* slots NULL until set: a dealloc skips them */
        row = PyTuple_New(10);
        if (row == NULL)
            goto error;
        PyList_SET_ITEM(rows, i, row); /* items NULL until set: likewise */
        seq_obj = PyLong_FromUnsignedLongLong(first + (unsigned long long)i);
        leaf = PyBytes_FromStringAndSize((const char *)leaves + 32 * i, 32);
        if (seq_obj == NULL || leaf == NULL) {
            Py_XDECREF(seq_obj);
            Py_XDECREF(leaf);
            goto error;
        }
        SLOT(c, F_POINT) = Py_NewRef(x->f[0]);
        SLOT(c, F_TS) = Py_NewRef(x->f[1]);
        SLOT(c, F_VALUE) = Py_NewRef(x->f[2]);
        SLOT(c, F_UNIT) = Py_NewRef(x->f[3]);
        SLOT(c, F_SOURCE) = Py_NewRef(x->f[4]);
        SLOT(c, F_QUALITY) = Py_NewRef(x->f[5]);
        SLOT(c, F_SEQ) = Py_NewRef(seq_obj);
        SLOT(c, F_GW) = Py_NewRef(gw);
        PyTuple_SET_ITEM(row, 0, seq_obj); /* the reference taken above */
        PyTuple_SET_ITEM(row, 1, Py_NewRef(one));
        PyTuple_SET_ITEM(row, 2, Py_NewRef(x->f[0]));
        PyTuple_SET_ITEM(row, 3, Py_NewRef(x->f[1]));
        PyTuple_SET_ITEM(row, 4, Py_NewRef(PyFloat_AS_DOUBLE(x->f[2]) != PyFloat_AS_DOUBLE(x->f[2])
                                           ? Py_None : x->f[2])); /* NaN: NULL */
        PyTuple_SET_ITEM(row, 5, Py_NewRef(x->f[3]));
        PyTuple_SET_ITEM(row, 6, Py_NewRef(x->f[5]));
        PyTuple_SET_ITEM(row, 7, Py_NewRef(x->f[4]));
        PyTuple_SET_ITEM(row, 8, Py_NewRef(Py_None));
        PyTuple_SET_ITEM(row, 9, leaf);
        /* both refer to plain values only (str, int, float, bytes, None; checked in pass 1):
         * they can be in no reference cycle, so the cyclic GC need not walk them
         * (mrv_core/_recordc.c says why that matters) */
        PyObject_GC_UnTrack(c);
        PyObject_GC_UnTrack(row);
    }
    result = PyTuple_Pack(2, committed, rows);
    goto done;

not_fast:
    result = Py_NewRef(Py_None);
    goto done;
error:
    result = NULL;
done:
    if (it != NULL) {
        for (i = 0; i < held; i++) {
            int f;
            for (f = 0; f < 6; f++)
                Py_XDECREF(it[i].f[f]);
        }
        PyMem_Free(it);
    }
    PyMem_RawFree(bodies);
    PyMem_RawFree(leaves);
    Py_XDECREF(one);
    Py_XDECREF(committed); /* a list half filled holds NULLs: list dealloc skips them */
    Py_XDECREF(rows);
    Py_XDECREF(seq_records);
    Py_DECREF(gw);
    Py_DECREF(rt);
    return result;
}

/* ------------------------------------------------------------------ reading_insert_params */

/* reading_insert_params(rows, k) -> the parameters of `INSERT ... VALUES (?, 1, ?, ?, ?, ?, ?,
 * ?, NULL, ?[, ?]), ...` for every k rows (the last list may hold fewer), or None when a row is
 * not an exact tuple of the width of the first (10 or 11), with kind exactly the int 1 and
 * extra None. The two constant columns are not bound: binding is a quarter of SQLite's cost of
 * a row. The leaf and the signature are given as bytearray, not bytes: Python's sqlite3 binds a
 * bytearray as it is, but looks a bytes object up in its adapter registry first (two failed
 * attribute look-ups, each building an AttributeError; ~0.5 us a row). The stored BLOB is the
 * same (ledger_client/_outbox.py, `_reading_insert_params_py` is the reference). */
static PyObject *
leafc_reading_insert_params(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *rows, *out = NULL, *group = NULL;
    Py_ssize_t n, k, width, i, j, g, pos = 0;
    if (nargs != 2 || !PyList_CheckExact(args[0]) || !PyLong_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "reading_insert_params(rows: list, k: int)");
        return NULL;
    }
    rows = args[0];
    k = PyLong_AsSsize_t(args[1]);
    if (k <= 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "k must be positive");
        return NULL;
    }
    n = PyList_GET_SIZE(rows);
    if (n == 0)
        return PyList_New(0);
    {
        PyObject *r0 = PyList_GET_ITEM(rows, 0);
        if (!PyTuple_CheckExact(r0))
            Py_RETURN_NONE;
        width = PyTuple_GET_SIZE(r0);
        if (width != 10 && width != 11)
            Py_RETURN_NONE;
    }
    for (i = 0; i < n; i++) { /* all checked first: nothing built for a chunk that is not */
        PyObject *r = PyList_GET_ITEM(rows, i), *kind;
        int overflow;
        if (!PyTuple_CheckExact(r) || PyTuple_GET_SIZE(r) != width ||
            PyTuple_GET_ITEM(r, 8) != Py_None)
            Py_RETURN_NONE;
        kind = PyTuple_GET_ITEM(r, 1);
        if (!PyLong_CheckExact(kind) || PyLong_AsLongAndOverflow(kind, &overflow) != 1 ||
            overflow)
            Py_RETURN_NONE;
    }
    out = PyList_New((n + k - 1) / k);
    if (out == NULL)
        return NULL;
    for (i = 0, g = 0; i < n; i += k, g++) {
        Py_ssize_t m = n - i < k ? n - i : k;
        group = PyList_New(m * (width - 2));
        if (group == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        pos = 0;
        for (j = i; j < i + m; j++) {
            PyObject *r = PyList_GET_ITEM(rows, j);
            Py_ssize_t c;
            for (c = 0; c < width; c++) {
                PyObject *v;
                if (c == 1 || c == 8)
                    continue;
                v = PyTuple_GET_ITEM(r, c);
                if (c >= 9 && PyBytes_CheckExact(v)) { /* the leaf, the signature */
                    v = PyByteArray_FromStringAndSize(PyBytes_AS_STRING(v), PyBytes_GET_SIZE(v));
                    if (v == NULL) {
                        Py_DECREF(group); /* its unset slots are NULL: freed as such */
                        Py_DECREF(out);
                        return NULL;
                    }
                } else {
                    Py_INCREF(v);
                }
                PyList_SET_ITEM(group, pos++, v);
            }
        }
        PyObject_GC_UnTrack(group); /* plain values only (the rows' own), like the rows */
        PyList_SET_ITEM(out, g, group);
    }
    return out;
}

/* ------------------------------------------------------------------ all_storable */

/* 1 when the exact str s encodes as UTF-8 (no lone surrogate), without encoding it. */
static int
str_encodable(PyObject *s)
{
    Py_ssize_t i, n;
#if PY_VERSION_HEX < 0x030C0000
    if (!PyUnicode_IS_READY(s))
        return 0; /* a legacy string not made ready: the Python path decides */
#endif
    if (PyUnicode_IS_ASCII(s))
        return 1;
    n = PyUnicode_GET_LENGTH(s);
    if (PyUnicode_KIND(s) == PyUnicode_2BYTE_KIND) {
        const Py_UCS2 *d = PyUnicode_2BYTE_DATA(s);
        for (i = 0; i < n; i++)
            if (d[i] >= 0xD800 && d[i] <= 0xDFFF)
                return 0;
    } else if (PyUnicode_KIND(s) == PyUnicode_4BYTE_KIND) {
        const Py_UCS4 *d = PyUnicode_4BYTE_DATA(s);
        for (i = 0; i < n; i++)
            if (d[i] >= 0xD800 && d[i] <= 0xDFFF)
                return 0;
    }
    return 1; /* 1-byte kind: Latin-1, always encodable */
}

/* the reading type's offsets, learned if needed: 1 usable, 0 not, -1 error */
static int
use_type(PyObject *type, PyTypeObject **rt, Py_ssize_t offs[N_FIELDS])
{
    if ((PyObject *)reading_type != type) {
        int known = learn_type(type);
        if (known <= 0)
            return known;
    }
    *rt = reading_type;
    memcpy(offs, field_offset, sizeof field_offset);
    return 1;
}

/* all_storable(readings, reading_type) -> True when every reading is exactly a Reading whose
 * fields pass ledger_client._outbox.unstorable (ts_ns an int64, quality a uint32, value a
 * float, point_id/unit/source str that encode as UTF-8); False otherwise, including "cannot
 * tell here" (an int value, another type, a list that is not a list or tuple). */
static PyObject *
leafc_all_storable(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *readings;
    PyObject **items;
    Py_ssize_t n, i, offs[N_FIELDS];
    PyTypeObject *rt;
    int known;

    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "all_storable(readings, reading_type)");
        return NULL;
    }
    readings = args[0];
    known = use_type(args[1], &rt, offs);
    if (known < 0)
        return NULL;
    if (known == 0)
        Py_RETURN_FALSE;
    if (PyList_CheckExact(readings)) {
        n = PyList_GET_SIZE(readings);
        items = ((PyListObject *)readings)->ob_item;
    } else if (PyTuple_CheckExact(readings)) {
        n = PyTuple_GET_SIZE(readings);
        items = &PyTuple_GET_ITEM(readings, 0);
    } else {
        Py_RETURN_FALSE;
    }
    /* no Python code runs in this loop (no allocation), so the list cannot change under it */
    for (i = 0; i < n; i++) {
        PyObject *r = items[i], *ts, *q, *v, *p, *u, *s;
        long long x;
        int overflow;
        if (Py_TYPE(r) != rt)
            Py_RETURN_FALSE;
        ts = SLOT(r, F_TS);
        q = SLOT(r, F_QUALITY);
        v = SLOT(r, F_VALUE);
        p = SLOT(r, F_POINT);
        u = SLOT(r, F_UNIT);
        s = SLOT(r, F_SOURCE);
        if (ts == NULL || q == NULL || v == NULL || p == NULL || u == NULL || s == NULL)
            Py_RETURN_FALSE;
        if (!PyLong_CheckExact(ts) || !PyLong_CheckExact(q) || !PyFloat_Check(v) ||
            !PyUnicode_CheckExact(p) || !PyUnicode_CheckExact(u) || !PyUnicode_CheckExact(s))
            Py_RETURN_FALSE;
        x = PyLong_AsLongLongAndOverflow(ts, &overflow);
        if (overflow || (x == -1 && PyErr_Occurred())) {
            PyErr_Clear();
            Py_RETURN_FALSE;
        }
        x = PyLong_AsLongLongAndOverflow(q, &overflow);
        if (overflow || x < 0 || x > 0xFFFFFFFFLL) {
            PyErr_Clear();
            Py_RETURN_FALSE;
        }
        if (!str_encodable(p) || !str_encodable(u) || !str_encodable(s))
            Py_RETURN_FALSE;
    }
    Py_RETURN_TRUE;
}

/* ------------------------------------------------------------------ telemetry_json */

typedef struct {
    char *p;
    size_t len, cap;
} buf_t;

static int
buf_grow(buf_t *b, size_t extra)
{
    size_t cap;
    char *np;
    if (b->len + extra <= b->cap)
        return 0;
    cap = b->cap * 2;
    if (cap < b->len + extra)
        cap = b->len + extra + 256;
    np = (char *)PyMem_Realloc(b->p, cap);
    if (np == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->p = np;
    b->cap = cap;
    return 0;
}

static inline int
buf_put(buf_t *b, const char *s, size_t n)
{
    if (buf_grow(b, n) < 0)
        return -1;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    return 0;
}

#define BUF_LIT(b, s) buf_put((b), (s), sizeof(s) - 1)

/* s as json.dumps(s, ensure_ascii=False) writes it, UTF-8: 1 written, 0 not encodable (a lone
 * surrogate: the Python path raises UnicodeEncodeError), -1 error. Only '"', '\\' and the
 * C0 controls are escaped; a UTF-8 multi-byte sequence has no byte below 0x80, so escaping
 * byte by byte is the same as escaping character by character. */
static int
put_json_str(buf_t *b, PyObject *s)
{
    static const char hex[] = "0123456789abcdef";
    Py_ssize_t n, i;
    const unsigned char *u;
    char *w;
#if PY_VERSION_HEX < 0x030C0000
    if (!PyUnicode_IS_READY(s))
        return 0;
#endif
    if (PyUnicode_IS_ASCII(s)) {
        u = (const unsigned char *)PyUnicode_DATA(s);
        n = PyUnicode_GET_LENGTH(s);
    } else {
        if (!str_encodable(s))
            return 0;
        u = (const unsigned char *)PyUnicode_AsUTF8AndSize(s, &n);
        if (u == NULL)
            return -1;
    }
    if (buf_grow(b, (size_t)n * 6 + 2) < 0)
        return -1;
    w = b->p + b->len;
    *w++ = '"';
    for (i = 0; i < n; i++) {
        unsigned char c = u[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            *w++ = (char)c;
            continue;
        }
        *w++ = '\\';
        switch (c) {
        case '"': *w++ = '"'; break;
        case '\\': *w++ = '\\'; break;
        case '\b': *w++ = 'b'; break;
        case '\f': *w++ = 'f'; break;
        case '\n': *w++ = 'n'; break;
        case '\r': *w++ = 'r'; break;
        case '\t': *w++ = 't'; break;
        default:
            *w++ = 'u'; *w++ = '0'; *w++ = '0';
            *w++ = hex[c >> 4]; *w++ = hex[c & 15];
        }
    }
    *w++ = '"';
    b->len = (size_t)(w - b->p);
    return 1;
}

/* an exact int in decimal, as str(int) */
static int
put_int(buf_t *b, PyObject *o)
{
    int overflow;
    long long x = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (x == -1 && PyErr_Occurred())
        return -1;
    if (!overflow) {
        char tmp[24];
        char *e = tmp + sizeof tmp, *w = e;
        unsigned long long m = x < 0 ? 0ULL - (unsigned long long)x : (unsigned long long)x;
        do {
            *--w = (char)('0' + m % 10);
            m /= 10;
        } while (m);
        if (x < 0)
            *--w = '-';
        return buf_put(b, w, (size_t)(e - w));
    } else {
        PyObject *str = PyObject_Str(o);
        const char *u;
        Py_ssize_t n;
        int rc;
        if (str == NULL)
            return -1;
        u = PyUnicode_AsUTF8AndSize(str, &n);
        rc = u == NULL ? -1 : buf_put(b, u, (size_t)n);
        Py_DECREF(str);
        return rc;
    }
}

/* float.__repr__(v) for a v with at most 6 decimals, without the general conversion: 1
 * written, 0 not such a value (then dtoa decides), -1 error.
 *
 * For 1e-4 <= |v| < 1e15, repr is fixed notation: the shortest decimal that reads back as v.
 * Take K = 6, or less so that |v| * 10^K < 10^15, and m = |v| * 10^K rounded to an integer
 * (the product's errors are below 0.2, so m is the nearest integer to the exact product).
 * When m / 10^K (one correctly rounded IEEE division, as strtod reads "m e-K") is v, the
 * decimal D = m * 10^-K reads back as v. D has at most 15 significant digits, so repr's
 * decimal, no longer, has too; two decimals of at most 15 significant digits never read as
 * the same double (DBL_DIG), so repr's decimal is D without its trailing zeros. When the
 * check fails, no decimal with at most K fraction digits reads back as v (it would be D), and
 * dtoa writes it. Checked against repr on ten million values (tests/test_leafc_telemetry.py
 * has a share of them). */
static int
put_short_float(buf_t *b, double v)
{
#if FLT_EVAL_METHOD == 0
    static const double P10[7] = {1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6};
    double a = v < 0 ? -v : v, t;
    unsigned long long m;
    int k = 6, i;
    char tmp[40];
    char *e = tmp + sizeof tmp, *w = e;
    if (a == 0.0)
        return buf_put(b, signbit(v) ? "-0.0" : "0.0", signbit(v) ? 4 : 3) < 0 ? -1 : 1;
    if (!(a >= 1e-4 && a < 1e15))
        return 0;
    while (k > 0 && a * P10[k] >= 1e15)
        k--;
    t = nearbyint(a * P10[k]);
    if (t >= 1e15 || t / P10[k] != a)
        return 0;
    m = (unsigned long long)t;
    while (k > 0 && m % 10 == 0) {
        m /= 10;
        k--;
    }
    if (k == 0) {
        *--w = '0';
    } else {
        for (i = 0; i < k; i++) {
            *--w = (char)('0' + m % 10);
            m /= 10;
        }
    }
    *--w = '.';
    do {
        *--w = (char)('0' + m % 10);
        m /= 10;
    } while (m);
    if (v < 0)
        *--w = '-';
    return buf_put(b, w, (size_t)(e - w)) < 0 ? -1 : 1;
#else
    return 0;
#endif
}

/* an exact float as control/_telemetry.py::_json_value writes it: float.__repr__ when
 * finite, null for NaN, Infinity / -Infinity */
static int
put_float(buf_t *b, double v)
{
    char *r;
    int rc;
    if (v != v)
        return BUF_LIT(b, "null");
    if (v - v != 0.0)
        return v > 0 ? BUF_LIT(b, "Infinity") : BUF_LIT(b, "-Infinity");
    rc = put_short_float(b, v);
    if (rc != 0)
        return rc < 0 ? -1 : 0;
    r = PyOS_double_to_string(v, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
    if (r == NULL)
        return -1;
    rc = buf_put(b, r, strlen(r));
    PyMem_Free(r);
    return rc;
}

/* telemetry_json(gateway_id, readings, signatures, reading_type) -> bytes, or None when not
 * the fast path: control/_telemetry.py::telemetry_json's bytes for a list or tuple of exact
 * Readings with exact-type fields (and exact bytes signatures, as many as readings). */
static PyObject *
leafc_telemetry_json(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    static const char hex[] = "0123456789abcdef";
    PyObject *gw, *readings, *sigs, *res = NULL;
    PyObject **items, **sig_items = NULL;
    Py_ssize_t n, i, offs[N_FIELDS];
    PyTypeObject *rt;
    buf_t b = {NULL, 0, 0};
    int known, rc;

    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError,
                        "telemetry_json(gateway_id, readings, signatures, reading_type)");
        return NULL;
    }
    gw = args[0];
    readings = args[1];
    sigs = args[2];
    known = use_type(args[3], &rt, offs);
    if (known < 0)
        return NULL;
    if (known == 0 || !PyUnicode_CheckExact(gw))
        Py_RETURN_NONE;
    if (PyList_CheckExact(readings)) {
        n = PyList_GET_SIZE(readings);
        items = ((PyListObject *)readings)->ob_item;
    } else if (PyTuple_CheckExact(readings)) {
        n = PyTuple_GET_SIZE(readings);
        items = &PyTuple_GET_ITEM(readings, 0);
    } else {
        Py_RETURN_NONE;
    }
    if (sigs != Py_None) {
        Py_ssize_t m;
        if (PyList_CheckExact(sigs)) {
            m = PyList_GET_SIZE(sigs);
            sig_items = ((PyListObject *)sigs)->ob_item;
        } else if (PyTuple_CheckExact(sigs)) {
            m = PyTuple_GET_SIZE(sigs);
            sig_items = &PyTuple_GET_ITEM(sigs, 0);
        } else {
            Py_RETURN_NONE;
        }
        if (m != n)
            Py_RETURN_NONE; /* the Python path raises (zip strict) */
    }
    /* check every reading first: no Python object is allocated below but the result (and a
     * str of an int beyond 64 bits, not tracked by the garbage collector), so no Python code
     * runs and the lists cannot change while they are read */
    for (i = 0; i < n; i++) {
        PyObject *r = items[i];
        int f;
        if (Py_TYPE(r) != rt)
            Py_RETURN_NONE;
        for (f = 0; f < N_FIELDS; f++)
            if (SLOT(r, f) == NULL)
                Py_RETURN_NONE;
        if (!PyUnicode_CheckExact(SLOT(r, F_POINT)) || !PyUnicode_CheckExact(SLOT(r, F_UNIT)) ||
            !PyLong_CheckExact(SLOT(r, F_QUALITY)) || !PyLong_CheckExact(SLOT(r, F_SEQ)) ||
            !PyLong_CheckExact(SLOT(r, F_TS)) || !PyFloat_CheckExact(SLOT(r, F_VALUE)))
            Py_RETURN_NONE;
        if (sig_items != NULL &&
            (!PyUnicode_CheckExact(SLOT(r, F_SOURCE)) || !PyBytes_CheckExact(sig_items[i])))
            Py_RETURN_NONE;
    }
    b.cap = 64 + (size_t)n * (sig_items != NULL ? 320 : 112);
    b.p = (char *)PyMem_Malloc(b.cap);
    if (b.p == NULL)
        return PyErr_NoMemory();
    if (BUF_LIT(&b, "{\"gateway\":") < 0 || (rc = put_json_str(&b, gw)) < 0)
        goto error;
    if (rc == 0)
        goto not_fast;
    if (BUF_LIT(&b, ",\"readings\":[") < 0)
        goto error;
    for (i = 0; i < n; i++) {
        PyObject *r = items[i];
        if ((i > 0 && BUF_LIT(&b, ",") < 0) || BUF_LIT(&b, "{\"point\":") < 0 ||
            (rc = put_json_str(&b, SLOT(r, F_POINT))) < 0)
            goto error;
        if (rc == 0)
            goto not_fast;
        if (BUF_LIT(&b, ",\"quality\":") < 0 || put_int(&b, SLOT(r, F_QUALITY)) < 0 ||
            BUF_LIT(&b, ",\"seq\":") < 0 || put_int(&b, SLOT(r, F_SEQ)) < 0)
            goto error;
        if (sig_items != NULL) {
            PyObject *sig = sig_items[i];
            Py_ssize_t k, sn = PyBytes_GET_SIZE(sig);
            const unsigned char *sp = (const unsigned char *)PyBytes_AS_STRING(sig);
            char *w;
            if (buf_grow(&b, (size_t)sn * 2 + 16) < 0)
                goto error;
            w = b.p + b.len;
            memcpy(w, ",\"sig\":\"0x", 10);
            w += 10;
            for (k = 0; k < sn; k++) {
                *w++ = hex[sp[k] >> 4];
                *w++ = hex[sp[k] & 15];
            }
            *w++ = '"';
            b.len = (size_t)(w - b.p);
            if (BUF_LIT(&b, ",\"source\":") < 0 || (rc = put_json_str(&b, SLOT(r, F_SOURCE))) < 0)
                goto error;
            if (rc == 0)
                goto not_fast;
        }
        if (BUF_LIT(&b, ",\"ts_ns\":") < 0 || put_int(&b, SLOT(r, F_TS)) < 0 ||
            BUF_LIT(&b, ",\"unit\":") < 0 || (rc = put_json_str(&b, SLOT(r, F_UNIT))) < 0)
            goto error;
        if (rc == 0)
            goto not_fast;
        if (BUF_LIT(&b, ",\"value\":") < 0 || put_float(&b, PyFloat_AS_DOUBLE(SLOT(r, F_VALUE))) < 0 ||
            BUF_LIT(&b, "}") < 0)
            goto error;
    }
    if (BUF_LIT(&b, "]}") < 0)
        goto error;
    res = PyBytes_FromStringAndSize(b.p, (Py_ssize_t)b.len);
    goto done;
not_fast:
    res = Py_NewRef(Py_None);
    goto done;
error:
    res = NULL;
done:
    PyMem_Free(b.p);
    return res;
}

/* ------------------------------------------------------------------ the Keccak kernel */

static PyObject *
leafc_keccak_kernel(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    return PyUnicode_FromString(kernel_name);
}

static PyObject *
leafc_use_keccak_kernel(PyObject *module, PyObject *arg)
{
    const char *name;
    if (!PyUnicode_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "use_keccak_kernel takes a kernel's name");
        return NULL;
    }
    name = PyUnicode_AsUTF8(arg);
    if (name == NULL)
        return NULL;
    return PyBool_FromLong(select_kernel(name));
}

/* ------------------------------------------------------------------ module */

static PyMethodDef leafc_methods[] = {
    {"keccak256", leafc_keccak256, METH_O, "keccak256(data) -> the 32-byte Keccak-256 digest."},
    {"leaf_of_body", leafc_leaf_of_body, METH_O,
     "leaf_of_body(body) -> keccak256(keccak256(body)), a record's leaf."},
    {"merkle_root", leafc_merkle_root, METH_O,
     "merkle_root(leaves) -> the root of the sorted-pair tree of 32-byte leaves (list/tuple)."},
    {"header_fields", leafc_header_fields, METH_O,
     "header_fields(keys) -> (first_seq, last_seq, min_ts, max_ts, root) of a batch's (seq, "
     "ts_ns, leaf) keys, or None when they are not plain, contiguous keys (the pure path "
     "decides)."},
    {"commit_readings", (PyCFunction)(void (*)(void))leafc_commit_readings, METH_FASTCALL,
     "commit_readings(records, first_seq, gateway_id, reading_type) -> (committed, rows) or "
     "None when the chunk is not all plain readings (then Python commits it)."},
    {"reading_insert_params", (PyCFunction)(void (*)(void))leafc_reading_insert_params,
     METH_FASTCALL,
     "reading_insert_params(rows, k) -> the insert's parameters of reading rows, k rows to a "
     "statement, without kind and extra; None when not all rows are reading rows."},
    {"all_storable", (PyCFunction)(void (*)(void))leafc_all_storable, METH_FASTCALL,
     "all_storable(readings, reading_type) -> True when every reading is a plain Reading that "
     "ledger_client._outbox.unstorable passes; False otherwise or when it cannot tell."},
    {"telemetry_json", (PyCFunction)(void (*)(void))leafc_telemetry_json, METH_FASTCALL,
     "telemetry_json(gateway_id, readings, signatures, reading_type) -> the telemetry message "
     "(control/_telemetry.py), or None when not all plain readings (then Python writes it)."},
    {"keccak_kernel", leafc_keccak_kernel, METH_NOARGS,
     "keccak_kernel() -> the name of the Keccak kernel in use: scalar, vector, vector8, avx2, "
     "avx512, avx512x8."},
    {"use_keccak_kernel", leafc_use_keccak_kernel, METH_O,
     "use_keccak_kernel(name) -> True when switched to that kernel, False when it is not "
     "available on this build or CPU (the kernel in use stays)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef leafc_module = {
    PyModuleDef_HEAD_INIT, "_leafc",
    "Compiled record leaves and Merkle tree (docs/compiled-path.md).", -1, leafc_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__leafc(void)
{
    /* the fastest kernel this CPU runs (the generic vector one is not chosen by itself: it is
     * not measured on other architectures) */
    if (!select_kernel("avx512x8") && !select_kernel("avx2"))
        select_kernel("scalar");
    return PyModule_Create(&leafc_module);
}
