/* fastbp/engine/_train_engine.h -- the C engine behind fastbp/engine/_c_train.pyx: whole training steps and
 * whole epochs of a plain dense stack, and the forward pass for prediction, with the GIL released.
 *
 * Layout.  Batch-major, row-major, as in the rest of fastbp: a layer maps its input X (n x d) to
 * Z = X W + b (n x k) and A = f(Z).  The products go to BLAS (NumPy's OpenBLAS sgemm, found at run
 * time by fastbp.engine, or SciPy's, passed in by the Cython module), always accumulating
 * (beta = 1) onto a C that the engine prepares: the bias rows for a forward product, zeros for a
 * gradient (OpenBLAS's beta = 0 clears C with one memset per row of ours, which costs more than
 * the product on small layers).  Everything else is fused into single passes that the C compiler
 * vectorises: activation (+ dropout) after the product, the derivative (+ dropout mask) after dX,
 * and the optimizer update with the norm of dW and the L2 penalty summed in the same pass.  Only
 * the exp-bound activations and the update have an AVX2/FMA clone chosen at run time (FB_CLONES);
 * the rest is memory-bound baseline code.
 *
 * Threading.  The engine runs its own small pool (the caller plus T-1 pthreads) in SPMD style, with
 * BLAS held at one thread: thread t owns rows [r_t, r_t+1) of the minibatch.  One step is two
 * phases separated by barriers:
 *   1. on its rows, each thread gathers the input, runs the forward pass through all layers, the
 *      loss and its gradient, and the backward pass dX = dZ W^T through all layers with the
 *      activation's derivative (and the dropout mask) folded in: no thread needs another
 *      thread's rows, so phase 1 has no barrier at all;
 *   2. after a barrier, each thread computes its slice of rows of every dW = X^T dZ (all batch
 *      rows) into a per-thread scratch that stays in cache, its slice of every db, and updates
 *      that slice of the parameters and of the optimizer state at once.
 * A second barrier ends the step (the next forward needs the new weights).  Every product is a
 * single-threaded GEMM on an evenly split half (rows for the forward and dX, which measured
 * 150-160 GFLOP/s on 2 cores against 110-125 for a split by columns; rows of dW: 165-183).
 *
 * Why not OpenBLAS's own threads: a threaded OpenBLAS call leaves its worker spinning (sched_yield)
 * for ~0.1 s, which steals a core from whatever runs next -- any fused elementwise pass run by a
 * second thread of ours, or the next library (measured: 169 -> 38 GFLOP/s for 256x1000x784 when
 * NumPy's and SciPy's OpenBLAS pools alternate); a single SPMD pool has no such third party.
 * Waits spin first (balanced phases), then yield, and only then sleep: waking a sleeping thread
 * costs ~1 ms on this kind of virtual machine.
 *
 * This header includes itself once per element type: float (suffix _f) and double (_d).  The
 * double instance is compiled for size (-Os: float is the speed target, and the .so has a size
 * budget); defining FB_FLOAT_ONLY leaves it out (float64 networks then train layer by layer).
 */
#ifndef FB_TRAIN_ENGINE_BODY
#ifndef FB_TRAIN_ENGINE_H
#define FB_TRAIN_ENGINE_H

#include <float.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* FB_MAXL (dense layers), FB_MAXT (threads), FB_MAXG (dropout generators) and fb_desc, the
 * network description fb_load reads: generated from fastbp/engine/layout.py */
#include "_layout.h"

/* The element math (activations, losses, optimizer steps), FB_CLONES and the activations' span
 * loops generated from the registry, shared with the kernels. */
#define FB_ACT_SPAN_SMALL /* log1p, the normal CDF: scalar passes here (size budget) */
#include "_act_span.h"

/* Cold code (per-row losses, libm-bound activations, set-up) is not worth vectorising: keeping
 * GCC's vectoriser out of it keeps the .so within its size budget. */
#if defined(__GNUC__) && !defined(__clang__)
#define FB_COLD __attribute__((noinline, optimize("no-tree-vectorize")))
#else
#define FB_COLD
#endif
/* A vectorised helper called from cold code: kept out of line so that it stays vectorised. */
#define FB_HOT __attribute__((noinline))

#if defined(__x86_64__) || defined(__i386__)
#define FB_RELAX() __builtin_ia32_pause()
#else
#define FB_RELAX() ((void)0)
#endif

/* the codes of activations, losses and optimizer steps: generated from fastbp/kernels/registry.py */
#include "_registry.h"

typedef void (*fb_sgemm_t)(char *, char *, int *, int *, int *, float *, float *, int *, float *,
                           int *, float *, float *, int *);
typedef void (*fb_dgemm_t)(char *, char *, int *, int *, int *, double *, double *, int *,
                           double *, int *, double *, double *, int *);
/* an ILP64 sgemm and dgemm (64-bit integers): NumPy's OpenBLAS, found at run time by fastbp.engine */
typedef void (*fb_sgemm64_t)(char *, char *, int64_t *, int64_t *, int64_t *, float *, float *,
                             int64_t *, float *, int64_t *, float *, float *, int64_t *);
typedef void (*fb_dgemm64_t)(char *, char *, int64_t *, int64_t *, int64_t *, double *, double *,
                             int64_t *, double *, int64_t *, double *, double *, int64_t *);
/* sgemv: y = alpha op(A) x + beta y, LP64 and ILP64 (one-row products: see R(gemm)) */
typedef void (*fb_sgemv_t)(char *, int *, int *, float *, float *, int *, float *, int *, float *,
                           float *, int *);
typedef void (*fb_sgemv64_t)(char *, int64_t *, int64_t *, float *, float *, int64_t *, float *,
                             int64_t *, float *, float *, int64_t *);
static fb_sgemm_t fb_sgemm; /* SciPy's (scipy.linalg.cython_blas), set by _c_train at import */
static fb_dgemm_t fb_dgemm;
static fb_sgemv_t fb_sgemv;

static double fb_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Build with -DFB_PROFILE to have each training call print, per thread, the seconds spent in
 * gather + phase 1, at the first barrier, in phase 2 and at the second barrier (stderr). */
#ifdef FB_PROFILE
#include <stdio.h>
static double fb_prof[FB_MAXT][5];
static __thread double fb_prof_last;
#define FB_PROFILE_MARK(k)                                                                      \
    do {                                                                                        \
        double now_ = fb_now();                                                                 \
        if ((k) > 0) fb_prof[tid][(k) - 1] += now_ - fb_prof_last;                              \
        fb_prof_last = now_;                                                                    \
    } while (0)
#else
#define FB_PROFILE_MARK(k) ((void)0)
#endif

/* ------------------------------------------------------------------------------ thread pool */
/* Waiting: spin (the phases a wait separates are balanced, so the partner is usually microseconds
 * away), then spin yielding the CPU (a partner preempted by another process gets it back), then
 * sleep in the kernel (futex on Linux, sched_yield elsewhere).  The sleep comes late on purpose:
 * waking a sleeping thread costs ~1 ms on a virtual machine whose idle vCPUs halt, which would
 * cost more than the spinning on a training step's scale. */
#define FB_SPIN_SECONDS 5e-5
#define FB_YIELD_SECONDS 3e-3

#ifdef __linux__
#include <linux/futex.h>
#include <sys/syscall.h>
static void fb_sleep_while(atomic_uint *word, unsigned value)
{
    syscall(SYS_futex, (unsigned *)word, FUTEX_WAIT_PRIVATE, value, NULL, NULL, 0);
}
static void fb_wake_all(atomic_uint *word)
{
    syscall(SYS_futex, (unsigned *)word, FUTEX_WAKE_PRIVATE, 0x7fffffff, NULL, NULL, 0);
}
#else
static void fb_sleep_while(atomic_uint *word, unsigned value)
{
    (void)word;
    (void)value;
    sched_yield();
}
static void fb_wake_all(atomic_uint *word) { (void)word; }
#endif

/* Return once *word != old; patient = 0 skips the spinning (for a worker left out of the last
 * job: sleep at once rather than compete for a core with the threads at work). */
static void fb_wait(atomic_uint *word, unsigned old, atomic_int *sleepers, int patient)
{
    double start = patient ? 0.0 : -1.0, now;
    for (int spins = 1; atomic_load_explicit(word, memory_order_acquire) == old; spins++) {
        FB_RELAX();
        if (spins % 64) continue;
        now = fb_now();
        if (start == 0.0) {
            start = now;
        } else if (start < 0.0 || now - start > FB_YIELD_SECONDS) {
            atomic_fetch_add(sleepers, 1);
            while (atomic_load(word) == old) fb_sleep_while(word, old);
            atomic_fetch_sub(sleepers, 1);
            return;
        } else if (now - start > FB_SPIN_SECONDS) {
            sched_yield();
        }
    }
}

/* *word += 1, waking whoever sleeps on it. */
static void fb_signal(atomic_uint *word, atomic_int *sleepers)
{
    atomic_fetch_add(word, 1);
    if (atomic_load(sleepers)) fb_wake_all(word);
}

_Static_assert(FB_MAXT < 64, "fb_publish keeps a job's thread count in 6 bits");

typedef struct fb_pool {
    int size;    /* threads including the caller */
    int active;  /* threads taking part in the current job (the caller and workers 1..active-1;
                  * the other workers sleep through it) */
    int started; /* worker threads running */
    pid_t owner; /* the process that started them (a forked child has none of them) */
    pthread_t threads[FB_MAXT];
    /* pthread_create/pthread_join, passed in at run time (fastbp.engine resolves them with
     * ctypes): glibc >= 2.34 versions them GLIBC_2.34 in libc, and a link-time reference would
     * make the wheel need glibc 2.34 (manylinux_2_34) instead of 2.17.  NULL: no threads. */
    int (*create)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);
    int (*join)(pthread_t, void **);
    void (*fn)(void *, int);
    void *arg;
    atomic_uint generation; /* jobs handed out << 6 | threads of the last job (see fb_publish) */
    atomic_uint done;       /* bumped when the last worker has finished a job */
    atomic_int finished;    /* workers of the current job done with it */
    atomic_int quit;
    atomic_int bar_count;
    atomic_uint bar_generation;
    atomic_int sleepers;
} fb_pool;

typedef struct { fb_pool *pool; int tid; } fb_worker_arg;

static void *fb_worker(void *raw)
{
    fb_worker_arg *self = (fb_worker_arg *)raw;
    fb_pool *pool = self->pool;
    int tid = self->tid;
    unsigned seen = 0;
    int busy = 1; /* whether this worker took part in the last job (then it spins for the next) */
    free(self);
    for (;;) {
        fb_wait(&pool->generation, seen, &pool->sleepers, busy);
        seen = atomic_load_explicit(&pool->generation, memory_order_acquire);
        if (atomic_load(&pool->quit)) break;
        int active = (int)(seen & 63u); /* the job's own count, even if it was handed out late */
        busy = tid < active;
        if (!busy) continue;
        pool->fn(pool->arg, tid);
        if (atomic_fetch_add(&pool->finished, 1) == active - 2)
            fb_signal(&pool->done, &pool->sleepers);
    }
    return NULL;
}

/* Hand out a job for threads 0..active-1 (or the quit order, active = 0): the count travels in the
 * same word as the job number, so that a worker that wakes late (left out of one job, while the
 * next is already handed out) reads the count of the job it sees, with its fn and arg. */
static void fb_publish(fb_pool *pool, int active)
{
    unsigned jobs = atomic_load(&pool->generation) >> 6;
    atomic_store(&pool->generation, ((jobs + 1u) << 6) | (unsigned)active);
    if (atomic_load(&pool->sleepers)) fb_wake_all(&pool->generation);
}

static void fb_pool_init(fb_pool *pool, int size, uintptr_t create, uintptr_t join)
{
    memset(pool, 0, sizeof(*pool));
    pool->size = size < 1 ? 1 : (size > FB_MAXT ? FB_MAXT : size);
    pool->create = (int (*)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *))create;
    pool->join = (int (*)(pthread_t, void **))join;
    if (!pool->create || !pool->join) pool->size = 1;
}

/* A pool inherited by a forked child: its workers were not (fork copies the calling thread only),
 * and their ids may name other threads of the child (OpenBLAS's).  Forget them without a join,
 * and the job state with them, as in a pool never started. */
static void fb_pool_adopt(fb_pool *pool)
{
    if (!pool->started || pool->owner == getpid()) return;
    fb_pool fresh;
    fb_pool_init(&fresh, pool->size, (uintptr_t)pool->create, (uintptr_t)pool->join);
    *pool = fresh;
}

/* Start the workers (once per process).  Returns the number of threads available (1 if none
 * could start). */
static int fb_pool_start(fb_pool *pool)
{
    fb_pool_adopt(pool);
    if (pool->started || pool->size <= 1) return pool->started + 1;
    pool->owner = getpid();
    for (int t = 1; t < pool->size; t++) {
        fb_worker_arg *arg = (fb_worker_arg *)malloc(sizeof(fb_worker_arg));
        if (!arg) break;
        arg->pool = pool;
        arg->tid = t;
        if (pool->create(&pool->threads[t], NULL, fb_worker, arg) != 0) { free(arg); break; }
        pool->started++;
    }
    return pool->started + 1;
}

static void fb_pool_stop(fb_pool *pool)
{
    fb_pool_adopt(pool);
    if (!pool->started) return;
    atomic_store(&pool->quit, 1);
    fb_publish(pool, 0);
    fb_wake_all(&pool->generation);
    for (int t = 1; t <= pool->started; t++) pool->join(pool->threads[t], NULL);
    pool->started = 0;
}

/* Run fn(arg, tid) for tid = 0..active-1 (0 on the calling thread); returns when all are done.
 * The caller must not ask for more threads than fb_pool_start returned. */
static void fb_pool_run(fb_pool *pool, int active, void (*fn)(void *, int), void *arg)
{
    if (active <= 1 || pool->started == 0) { fn(arg, 0); return; }
    pool->fn = fn;
    pool->arg = arg;
    pool->active = active;
    atomic_store(&pool->bar_count, 0);
    atomic_store(&pool->finished, 0);
    unsigned done = atomic_load(&pool->done);
    fb_publish(pool, active);
    fn(arg, 0);
    fb_wait(&pool->done, done, &pool->sleepers, 1);
}

/* Barrier of the threads of the current job. */
static void fb_barrier(fb_pool *pool)
{
    unsigned gen = atomic_load_explicit(&pool->bar_generation, memory_order_acquire);
    if (atomic_fetch_add(&pool->bar_count, 1) == pool->active - 1) {
        atomic_store(&pool->bar_count, 0);
        fb_signal(&pool->bar_generation, &pool->sleepers);
        return;
    }
    fb_wait(&pool->bar_generation, gen, &pool->sleepers, 1);
}

/* Everything a trainer needs, set up once by the Cython module from NumPy arrays it keeps alive
 * (pointers to float or double data, depending on the instance).  Dense layer l (0-based) maps
 * d[l] -> d[l+1] columns.  drop[l] marks a Dropout on the *input* of layer l (l = 0: the network
 * input), whose draws u come from generator group dgroup[l]. */
typedef struct fb_net {
    int L, T, B;           /* layers, threads for training, rows per minibatch */
    int loss, labels;      /* loss code; whether targets are intp class labels */
    int opt;               /* FB_SGD .. FB_ADAM */
    int d[FB_MAXL + 1];
    int act[FB_MAXL];
    double alpha[FB_MAXL];
    int drop[FB_MAXL];
    double rate[FB_MAXL], dscale[FB_MAXL];
    int dgroup[FB_MAXL];
    long doff[FB_MAXL];    /* offset of the layer's draws in its group's block, in row widths */
    long gwidth[FB_MAXG];  /* total width of a group's layers */
    void *W[FB_MAXL], *b[FB_MAXL], *dW[FB_MAXL], *db[FB_MAXL];
    void *Z[FB_MAXL], *A[FB_MAXL]; /* Z == A when the derivative can be had from A in place */
    void *D[FB_MAXL];              /* dropped-out input of layer l (when drop[l]) */
    void *dZ[FB_MAXL];
    void *Xb;                      /* gathered minibatch input */
    void *dWs;                     /* per-thread scratch for dW slices (or NULL), see phase2 */
    long dWs_size;                 /* its entries per thread */
    int dWs_threads;               /* threads it has room for */
    void *state[2 * FB_MAXL][FB_STEP_MAXS]; /* per parameter, the step's state arrays or NULL */
    double wd[2 * FB_MAXL];                  /* per parameter, its weight decay */
    double hyper[FB_STEP_MAXH];              /* the step's hyperparameters (registry order) */
    int wd_index;                            /* weight_decay's place among them */
    fb_step_span_fn step_span;               /* _c_step's loops (kernels/_step_span.h) */
    long t;                        /* optimizer steps before this call */
    int p_lo[FB_MAXL][FB_MAXT + 1]; /* rows of dW per thread */
    int k_lo[FB_MAXL][FB_MAXT + 1]; /* entries of db per thread */
    /* one call */
    const void *X, *Y;
    const intptr_t *lab, *order;
    long n, mb0, mb1;
    void *U[FB_MAXG];
    /* results of one call */
    double loss_sum, pen_sum, pen_cur, weight_sum, gn_sum[FB_MAXL];
    const double *sw;              /* the sample weight of every row of X, or NULL */
    double loss_part[FB_MAXT], pen_part[FB_MAXT], gn_part[FB_MAXT][FB_MAXL];
    /* prediction */
    const void *PX;
    void *Pout;
    long Pn, Pwidth;
    int PT, Pchunk;
    void *Pbuf;   /* PT blocks of 2 * Pchunk * Pwidth */
    fb_pool *pool;
    fb_call *call;         /* the caller's arguments and results of a call (fb_run) */
    fb_result *result;
    int (*blas_get)(void); /* the BLAS's thread count (OpenBLAS), or NULL */
    void (*blas_set)(int);
    fb_sgemm_t sgemm;      /* the float products: this LP64 sgemm (NULL: fb_sgemm) ... */
    fb_sgemm64_t sgemm64;  /* ... or this ILP64 one, when set; */
    fb_sgemv_t sgemv;      /* and the one-row products: this LP64 sgemv (NULL: fb_sgemv) ... */
    fb_sgemv64_t sgemv64;  /* ... or this ILP64 one, when set */
    fb_dgemm_t dgemm;      /* the double products: this LP64 dgemm (NULL: fb_dgemm) ... */
    fb_dgemm64_t dgemm64;  /* ... or this ILP64 one, when set */
    /* data-parallel training (fastbp.distributed; fb_desc's fields say what each is) */
    void *allreduce;       /* MPI_Allreduce, or NULL: one process */
    int mpi_width, reduce_error;
    int64_t mpi_datatype, mpi_op, mpi_comm;
    void *gsend, *grecv;   /* flat gradients: this rank's, and summed over the ranks */
    long goff[2 * FB_MAXL], gcount; /* each parameter's offset in them; their entries */
    int dp_rank, dp_size;  /* replicated rows: this rank's share of each minibatch */
    const int64_t *dp_rows; /* sharded rows: each minibatch's rows over all ranks, or NULL */
    /* a penalty on the output h of dense layer `code` (fb_desc's fields say what each is) */
    int code, sparsity;
    double sp_weight, sp_rho, *rho_parts, *rho_hat;
    int segment;           /* a stack's forward (1) or backward (2) pass, or 0 (fb_call's field) */
} fb_net;

/* Load a network's description (fb_desc, filled by field name by fastbp.engine; see
 * fastbp/engine/layout.py).  Returns 0, or -1 when the sizes are out of range. */
FB_COLD static int fb_load(fb_net *N, const fb_desc *D)
{
    int L = (int)D->L, G = (int)D->groups;
    if (L < 1 || L > FB_MAXL || G < 0 || G > FB_MAXG) return -1;
    N->L = L; N->B = (int)D->B; N->loss = (int)D->loss; N->labels = (int)D->labels;
    N->opt = (int)D->opt;
    N->dWs_size = (long)D->dws_size;
    N->dWs_threads = (int)D->dws_threads;
    for (int l = 0; l <= L; l++) N->d[l] = (int)D->d[l];
    for (int l = 0; l < L; l++) {
        N->act[l] = (int)D->act[l]; N->drop[l] = (int)D->drop[l];
        N->dgroup[l] = (int)D->dgroup[l]; N->doff[l] = (long)D->doff[l];
        N->alpha[l] = D->alpha[l];
        N->rate[l] = D->rate[l];
        N->dscale[l] = 1.0 / (1.0 - N->rate[l]);
        N->W[l] = (void *)(uintptr_t)D->W[l]; N->b[l] = (void *)(uintptr_t)D->b[l];
        N->dW[l] = (void *)(uintptr_t)D->dW[l]; N->db[l] = (void *)(uintptr_t)D->db[l];
        N->Z[l] = (void *)(uintptr_t)D->Z[l]; N->A[l] = (void *)(uintptr_t)D->A[l];
        N->D[l] = (void *)(uintptr_t)D->D[l]; N->dZ[l] = (void *)(uintptr_t)D->dZ[l];
    }
    for (int g = 0; g < G; g++) {
        N->gwidth[g] = (long)D->gwidth[g];
        N->U[g] = (void *)(uintptr_t)D->U[g];
    }
    for (int j = 0; j < FB_STEP_MAXH; j++) N->hyper[j] = D->hyper[j];
    N->wd_index = (int)D->wd_index;
    if (N->opt < 0 || N->opt >= FB_STEP_COUNT || N->wd_index < 0 || N->wd_index >= FB_STEP_MAXH
        || !D->step_span) return -1;
    N->step_span = (fb_step_span_fn)(uintptr_t)D->step_span;
    for (int q = 0; q < 2 * L; q++) {
        N->wd[q] = D->wd[q];
        for (int j = 0; j < FB_STEP_MAXS; j++)
            N->state[q][j] = (void *)(uintptr_t)D->state[q * FB_STEP_MAXS + j];
    }
    N->call = (fb_call *)(uintptr_t)D->call;
    N->result = (fb_result *)(uintptr_t)D->result;
    N->blas_get = (int (*)(void))(uintptr_t)D->blas_get;
    N->blas_set = (void (*)(int))(uintptr_t)D->blas_set;
    N->sgemm = (fb_sgemm_t)(uintptr_t)D->sgemm;
    N->sgemm64 = (fb_sgemm64_t)(uintptr_t)D->sgemm64;
    N->sgemv = (fb_sgemv_t)(uintptr_t)D->sgemv;
    N->sgemv64 = (fb_sgemv64_t)(uintptr_t)D->sgemv64;
    N->dgemm = (fb_dgemm_t)(uintptr_t)D->dgemm;
    N->dgemm64 = (fb_dgemm64_t)(uintptr_t)D->dgemm64;
    N->Xb = (void *)(uintptr_t)D->Xb;
    N->dWs = (void *)(uintptr_t)D->dWs;
    N->allreduce = (void *)(uintptr_t)D->allreduce;
    N->mpi_width = (int)D->mpi_width;
    N->mpi_datatype = D->mpi_datatype; N->mpi_op = D->mpi_op; N->mpi_comm = D->mpi_comm;
    N->gsend = (void *)(uintptr_t)D->gsend; N->grecv = (void *)(uintptr_t)D->grecv;
    N->code = (int)D->code; N->sparsity = (int)D->sparsity;
    N->sp_weight = D->sparsity_weight; N->sp_rho = D->sparsity_rho;
    N->rho_parts = (double *)(uintptr_t)D->rho_parts; N->rho_hat = (double *)(uintptr_t)D->rho_hat;
    if (N->sparsity && (N->code < 0 || N->code >= L - 1 || !N->rho_parts || !N->rho_hat))
        return -1;
    N->gcount = 0;
    for (int l = 0; l < L; l++) {
        N->goff[2 * l] = N->gcount;
        N->gcount += (long)N->d[l] * N->d[l + 1];
        N->goff[2 * l + 1] = N->gcount;
        N->gcount += N->d[l + 1];
    }
    if (N->allreduce && (!N->gsend || !N->grecv || N->gcount > INT32_MAX
                         || (N->mpi_width != 4 && N->mpi_width != 8)))
        return -1;
    return 0;
}

/* The step's one reduction: grecv = the sum over the ranks of gsend (MPI_SUM), by the MPI library
 * mpi4py loaded, whose handles are ints (MPICH's ABI) or pointers (Open MPI's, MPI 5's): called
 * through the prototype of the right width.  Returns MPI's error code (0: MPI_SUCCESS). */
FB_COLD static int fb_allreduce(const fb_net *N)
{
    if (N->mpi_width == 4)
        return ((int (*)(const void *, void *, int, int32_t, int32_t, int32_t))N->allreduce)(
            N->gsend, N->grecv, (int)N->gcount, (int32_t)N->mpi_datatype, (int32_t)N->mpi_op,
            (int32_t)N->mpi_comm);
    return ((int (*)(const void *, void *, int, void *, void *, void *))N->allreduce)(
        N->gsend, N->grecv, (int)N->gcount, (void *)(intptr_t)N->mpi_datatype,
        (void *)(intptr_t)N->mpi_op, (void *)(intptr_t)N->mpi_comm);
}

/* Rows of every dW and entries of every db per thread (rows of dW in multiples of 8). */
FB_COLD static void fb_partition(fb_net *N)
{
    for (int l = 0; l < N->L; l++) {
        int di = N->d[l], k = N->d[l + 1];
        int align = di >= 16 * N->T ? 8 : 1;
        for (int t = 0; t <= N->T; t++) {
            N->p_lo[l][t] = t == N->T ? di : (int)(((long)(di / align) * t) / N->T) * align;
            N->k_lo[l][t] = (int)(((long)k * t) / N->T);
        }
    }
    for (int t = 0; t < N->T; t++) N->loss_part[t] = 0;
}

/* After a step (thread 0): the norms of its dW, and the L2 penalty at the new parameters. */
FB_COLD static void fb_combine(fb_net *N, int nb, double weight)
{
    /* a minibatch's objective uses the weights before its step; weighted, its value times W_B
     * holds the penalty (its decays times n_B / W_B) times W_B: n_B times it, as unweighted */
    N->pen_sum += N->pen_cur * nb;
    N->weight_sum += weight;
    double pen = 0;
    for (int l = 0; l < N->L; l++) {
        double s = 0;
        for (int t = 0; t < N->T; t++) s += N->gn_part[t][l];
        N->gn_sum[l] += sqrt(s);
    }
    for (int t = 0; t < N->T; t++) pen += N->pen_part[t];
    N->pen_cur = pen;
}

/* --------------------------------------------------------------- instantiate for each type */
#define FB_TRAIN_ENGINE_BODY
#define REAL float
#define FB_CLONES_T FB_CLONES
#define R(name) name##_f
#define FB_FLOAT 1
#include "_train_engine.h"
#undef REAL
#undef R
#undef FB_CLONES_T
#undef FB_FLOAT
#ifndef FB_FLOAT_ONLY /* the float64 engine, compiled for size */
#define FB_WITH_DOUBLE
#pragma GCC push_options
#pragma GCC optimize("Os")
#define REAL double
#define FB_CLONES_T /* double: no speed target, no clones (size) */
#define R(name) name##_d
#define FB_FLOAT 0
#include "_train_engine.h"
#pragma GCC pop_options
#define FB_DOUBLE_ENGINE 1
#else
#define FB_DOUBLE_ENGINE 0
#endif
#undef FB_TRAIN_ENGINE_BODY

/* One call from Python, its arguments in N->call and its results in N->result (fb_call and
 * fb_result, fastbp/engine/layout.py): training or prediction, on at most the threads wanted (and
 * at most the BLAS's thread limit, so that threadpoolctl caps them), with the BLAS held at one
 * thread meanwhile. */
/* OpenBLAS runs a product on one thread anyway when m n k is at most this (its
 * GEMM_MULTITHREAD_THRESHOLD x 65536): a one-thread call with only such products needs no
 * (costly) BLAS thread switching. */
#define FB_BLAS_SMALL 262144.0

/* Holding a BLAS at one thread, shared by every engine call in the process: the thread count is
 * the library's (process-wide), and engines may run at once (their calls release the GIL), so the
 * first call to hold a library saves its count and sets 1, the last to let go restores it, and
 * calls in between read the saved count (not the 1 set by another).  Two slots: NumPy's and
 * SciPy's OpenBLAS.  A spin lock (held for a get or set call) keeps libpthread out of the link. */
typedef struct { void (*set)(int); int holders, saved; } fb_blas_hold_t;
static fb_blas_hold_t fb_blas_holds[2];
static atomic_flag fb_blas_lock = ATOMIC_FLAG_INIT;

/* Hold N's BLAS at one thread; returns its thread count before the first holder (at least 1). */
static int fb_blas_hold(fb_net *N)
{
    int limit = 1;
    while (atomic_flag_test_and_set_explicit(&fb_blas_lock, memory_order_acquire)) FB_RELAX();
    fb_blas_hold_t *h = NULL;
    for (int i = 0; i < 2 && !h; i++)
        if (fb_blas_holds[i].holders && fb_blas_holds[i].set == N->blas_set) h = &fb_blas_holds[i];
    for (int i = 0; i < 2 && !h; i++)
        if (!fb_blas_holds[i].holders) h = &fb_blas_holds[i];
    if (h) {
        if (h->holders++ == 0) {
            h->set = N->blas_set;
            h->saved = N->blas_get();
            if (h->saved != 1) N->blas_set(1);
        }
        limit = h->saved;
    } /* else: a third library at once, not held (speed only: never the case with fastbp's two) */
    atomic_flag_clear_explicit(&fb_blas_lock, memory_order_release);
    return limit < 1 ? 1 : limit;
}

/* In a forked child (called by fastbp.engine after a fork, while the child has one thread): the
 * holders were threads of the parent, which the child does not have.  Give each held BLAS its
 * saved count back, as they would have, and free the lock, which one of them may have held. */
static void fb_blas_after_fork(void)
{
    for (int i = 0; i < 2; i++) {
        fb_blas_hold_t *h = &fb_blas_holds[i];
        if (h->holders && h->saved != 1) h->set(h->saved);
        h->holders = 0;
    }
    atomic_flag_clear(&fb_blas_lock);
}

static void fb_blas_release(fb_net *N)
{
    while (atomic_flag_test_and_set_explicit(&fb_blas_lock, memory_order_acquire)) FB_RELAX();
    for (int i = 0; i < 2; i++) {
        fb_blas_hold_t *h = &fb_blas_holds[i];
        if (h->holders && h->set == N->blas_set) {
            if (--h->holders == 0 && h->saved != 1) N->blas_set(h->saved);
            break;
        }
    }
    atomic_flag_clear_explicit(&fb_blas_lock, memory_order_release);
}

static void fb_run(fb_net *N, int dbl, int predict)
{
    const fb_call *c = N->call;
    fb_result *r = N->result;
    int blas = FB_MAXT; /* the BLAS's thread limit: it caps ours, BLAS runs on one thread meanwhile */
    int wanted = (int)(predict ? c->pthreads : c->threads);
    double rows = predict ? (double)c->pchunk : (double)N->B, mnk = 0;
    (void)dbl;
    for (int l = 0; l < N->L; l++) {
        double size = rows * N->d[l] * N->d[l + 1];
        mnk = size > mnk ? size : mnk;
    }
    /* a one-thread forward pass may leave the products to a threaded BLAS (pblas) */
    int control = N->blas_get && N->blas_set && (wanted > 1 || mnk > FB_BLAS_SMALL)
                  && !(predict && c->pblas);
    if (control) blas = fb_blas_hold(N);
    if (predict) {
        N->PX = (const void *)(uintptr_t)c->px; N->Pout = (void *)(uintptr_t)c->pout;
        N->Pn = (long)c->pn; N->Pbuf = (void *)(uintptr_t)c->pbuf; N->Pwidth = (long)c->pwidth;
        N->Pchunk = (int)c->pchunk;
        N->PT = wanted < 1 ? 1 : (wanted > blas ? blas : wanted);
#ifdef FB_WITH_DOUBLE
        if (dbl) predict_d(N); else
#endif
        predict_f(N);
        r->threads = N->PT;
    } else {
        N->X = (const void *)(uintptr_t)c->X; N->Y = (const void *)(uintptr_t)c->Y;
        N->lab = (const intptr_t *)(uintptr_t)c->Y; N->order = (const intptr_t *)(uintptr_t)c->order;
        N->n = (long)c->n; N->mb0 = (long)c->mb0; N->mb1 = (long)c->mb1; N->t = (long)c->t;
        N->sw = (const double *)(uintptr_t)c->sample_weight;
        N->dp_rank = (int)c->dp_rank;
        N->dp_size = c->dp_size > 1 ? (int)c->dp_size : 1;
        N->dp_rows = (const int64_t *)(uintptr_t)c->dp_rows;
        N->segment = (int)c->segment;
        N->Pout = (void *)(uintptr_t)c->pout;
        N->reduce_error = 0;
        N->weight_sum = 0;
        N->T = wanted < 1 ? 1 : (wanted > blas ? blas : wanted);
        N->pen_cur = r->penalty;
        N->pen_sum = 0;
        for (int l = 0; l < N->L; l++) N->gn_sum[l] = 0;
#ifdef FB_WITH_DOUBLE
        if (dbl) train_d(N); else
#endif
        train_f(N);
#ifdef FB_PROFILE
        for (int t = 0; t < N->T; t++) {
            fprintf(stderr, "thread %d: phase1 %.3f ms  wait1 %.3f ms  phase2 %.3f ms  "
                    "wait2 %.3f ms\n", t, fb_prof[t][0] * 1e3, fb_prof[t][1] * 1e3,
                    fb_prof[t][2] * 1e3, fb_prof[t][3] * 1e3);
            memset(fb_prof[t], 0, sizeof fb_prof[t]);
        }
#endif
        r->penalty = N->pen_cur;
        r->penalty_sum = N->pen_sum;
        r->loss_sum = N->loss_sum;
        r->weight_sum = N->weight_sum;
        r->threads = N->T;
        r->reduce_error = N->reduce_error;
        for (int l = 0; l < N->L; l++) r->grad_norms[l] = N->gn_sum[l];
    }
    if (control) fb_blas_release(N);
}

#endif /* FB_TRAIN_ENGINE_H */
#else  /* ------------------------------------------------------------- the typed body */

#define FB_P(ptr) ((REAL *)(ptr))


/* C (M x N, row-major) += op(A) op(B), by the column-major BLAS on the transposes.  Always with
 * beta = 1 on a C prepared by the caller (zeros, or the bias rows): OpenBLAS's beta = 0 clears C
 * column by column, one memset per row of ours, which costs more than the product itself on the
 * small layers.  One row of C from one row of A (a one-row prediction) goes to sgemv: OpenBLAS's
 * sgemm takes 64-67 us for 1 x 784 x 256 where its sgemv takes 18-19 us. */
__attribute__((noinline)) static void R(gemm)(const fb_net *net, char ta, char tb, int M, int N,
                                              int K, const REAL *A, int lda, const REAL *B,
                                              int ldb, REAL *C, int ldc)
{
    REAL one = 1;
    if (M <= 0 || N <= 0 || K <= 0) return;
#if FB_FLOAT
    if (M == 1 && ta == 'N') { /* c += op(B)^T a, with B' (column-major, ldb) N x K or K x N */
        int rows = tb == 'N' ? N : K, cols = tb == 'N' ? K : N, inc = 1;
        if (net->sgemv64) {
            int64_t r = rows, c = cols, lb = ldb, i = 1;
            net->sgemv64(&tb, &r, &c, &one, (REAL *)B, &lb, (REAL *)A, &i, &one, C, &i);
            return;
        }
        (net->sgemv ? net->sgemv : fb_sgemv)(&tb, &rows, &cols, &one, (REAL *)B, &ldb, (REAL *)A,
                                             &inc, &one, C, &inc);
        return;
    }
    if (net->sgemm64) {
        int64_t m = M, n = N, k = K, la = lda, lb = ldb, lc = ldc;
        net->sgemm64(&tb, &ta, &n, &m, &k, &one, (REAL *)B, &lb, (REAL *)A, &la, &one, C, &lc);
        return;
    }
    (net->sgemm ? net->sgemm : fb_sgemm)(&tb, &ta, &N, &M, &K, &one, (REAL *)B, &ldb, (REAL *)A,
                                         &lda, &one, C, &ldc);
#else
    if (net->dgemm64) {
        int64_t m = M, n = N, k = K, la = lda, lb = ldb, lc = ldc;
        net->dgemm64(&tb, &ta, &n, &m, &k, &one, (REAL *)B, &lb, (REAL *)A, &la, &one, C, &lc);
        return;
    }
    (net->dgemm ? net->dgemm : fb_dgemm)(&tb, &ta, &N, &M, &K, &one, (REAL *)B, &ldb, (REAL *)A,
                                         &lda, &one, C, &ldc);
#endif
}

/* Each of m rows of C (k columns, contiguous) = b, or 0 when b is NULL. */
static void R(fill_rows)(int m, int k, REAL *restrict C, const REAL *restrict b)
{
    if (!b) {
        memset(C, 0, sizeof(REAL) * (size_t)m * (size_t)k);
        return;
    }
    for (int i = 0; i < m; i++) memcpy(C + (long)i * k, b, sizeof(REAL) * (size_t)k);
}

/* out[j] = exp(in[j] - shift), j < count (out may be in): softmax rows and the cross-entropy.
 * For float _vmath.h's fb_vexp, vectorised with an AVX2/FMA clone, which the activations' span
 * loops use too (one copy of the code in the .so); for double a plain loop. */
#if FB_FLOAT
static inline void R(exp_shifted)(long count, const REAL *in, REAL shift, REAL *out)
{
    fb_vexp(in, out, count, shift);
}
#else
static void R(exp_shifted)(long count, const REAL *in, REAL shift, REAL *out)
{
    for (long j = 0; j < count; j++) out[j] = fb_exp((REAL)(in[j] - shift));
}
#endif

/* A = f(Z) over m rows of k (the bias is already in Z; A is Z where the layer keeps A in Z's
 * buffer, registry.a_may_share_z): softmax by rows, every other activation through the span loop
 * generated from the registry (_act_span.h, shared with the kernels; float's has the AVX2 clone). */
FB_COLD static void R(act_forward)(int act, REAL alpha, int m, int k, REAL *Z, REAL *A)
{
    if (act == FB_SOFTMAX) {
        for (int i = 0; i < m; i++) {
            REAL *z = Z + (long)i * k, mx = -INFINITY, s = 0;
            for (int j = 0; j < k; j++) mx = z[j] > mx ? z[j] : mx;
            R(exp_shifted)(k, z, mx, z);
            for (int j = 0; j < k; j++) s += z[j];
            for (int j = 0; j < k; j++) z[j] = z[j] / s;
        }
        return;
    }
    R(fb_span_forward)(act, Z, A, (ptrdiff_t)m * k, alpha);
}

/* Inverted dropout of m rows of k: out = in where u >= rate (scaled by 1/(1-rate)), else 0. */
static void R(dropout_forward)(long count, const REAL *restrict in,
                                           const REAL *restrict u, REAL rate, REAL scale,
                                           REAL *restrict out)
{
    for (long i = 0; i < count; i++) out[i] = (in[i] * (REAL)(u[i] >= rate)) * scale;
}

/* In place: G = f'(Z) * (G masked by the dropout draws u, when u is given), m rows of k: the
 * mask in one vectorised pass, then softmax by rows or the registry's span loop (_act_span.h). */
FB_HOT static void R(dropout_mask)(long count, REAL *restrict G, const REAL *restrict u, REAL rate,
                                   REAL scale)
{
    for (long e = 0; e < count; e++) G[e] = (G[e] * (REAL)(u[e] >= rate)) * scale;
}

FB_COLD static void R(act_backward)(int act, REAL alpha, int m, int k, const REAL *Z, const REAL *A,
                            REAL *G, const REAL *u, REAL rate, REAL scale)
{
    if (u) R(dropout_mask)((long)m * k, G, u, rate, scale);
    if (act == FB_SOFTMAX) {
        for (int i = 0; i < m; i++) {
            const REAL *a = A + (long)i * k;
            REAL *g = G + (long)i * k, dot = 0;
            for (int j = 0; j < k; j++) dot += g[j] * a[j];
            for (int j = 0; j < k; j++) g[j] = (g[j] - dot) * a[j];
        }
        return;
    }
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wrestrict" /* in place: the same index, _act_span.h says why */
    R(fb_span_backward)(act, Z, A, G, G, (ptrdiff_t)m * k, alpha);
#pragma GCC diagnostic pop
}

/* The loss over m rows of the output O (k columns) against the targets of those rows (row i is
 * Y[rows[i]] or the label lab[rows[i]]), with its gradient / n into G.  Returns the summed loss
 * of the rows (the minibatch loss times n, before the mean).  Not cloned: one pass over the
 * output, a small part of a step. */
FB_COLD static double R(loss_rows)(int loss, int m, int k, const REAL *O, const REAL *Y,
                                     const intptr_t *lab, const intptr_t *rows, int n, REAL *G,
                                     const double *w, double wscale)
{
    double total = 0, inv_n = 1.0 / n;
    REAL scale = (REAL)1 / (REAL)n;
    for (int i = 0; i < m; i++) {
        const REAL *o = O + (long)i * k;
        REAL *g = G + (long)i * k;
        const REAL *y = lab ? NULL : Y + (long)rows[i] * k;
        double row; /* the row's loss */
        int j;
        if (loss == FB_SQUARED_ERROR) {
            double acc = 0;
            for (j = 0; j < k; j++) {
                double d = fb_squared_error_d(o[j], y[j]);
                acc += d * d;
                g[j] = (REAL)(d * inv_n);
            }
            row = 0.5 * acc;
        } else if (loss == FB_SOFTMAX_CROSS_ENTROPY) { /* p = exp(o - max) / sum: one exp per entry */
            REAL mx = -INFINITY, s = 0;
            for (j = 0; j < k; j++) mx = o[j] > mx ? o[j] : mx;
            R(exp_shifted)(k, o, mx, g);
            for (j = 0; j < k; j++) s += g[j];
            /* log in REAL: s is a REAL sum (a few ulps), so a double log would add no accuracy
             * worth its cost (a double log per row was 4% of a 64-32-10 step) */
            double lse = _Generic(s, float: logf, default: log)(s), value = 0;
            REAL p = 1 / s;
            if (lab) {
                intptr_t c = lab[rows[i]];
                value = ((double)o[c] - (double)mx) - lse;
                REAL ps = p * scale; /* softmax / n, the label less 1 / n (as the kernel) */
                for (j = 0; j < k; j++) g[j] = g[j] * ps;
                g[c] -= scale;
            } else {
                double t_sum = 0;
                for (j = 0; j < k; j++) {
                    value += fb_softmax_ce_term(y[j], (double)o[j] - (double)mx);
                    t_sum += y[j];
                    g[j] = (g[j] * p - y[j]) * scale;
                }
                value -= lse * t_sum;
            }
            row = -value;
        } else { /* sigmoid cross-entropy from logits */
            double acc = 0;
            for (j = 0; j < k; j++) {
                REAL v = o[j];
                REAL e = fb_exp(fb_neg_abs(v));
                acc += fb_sigmoid_ce(v, y[j], fb_log1p_pos(e));
                g[j] = fb_sigmoid_ce_grad(v, y[j], e, scale);
            }
            row = acc;
        }
        if (w) { /* weighted: the row's loss times w_i, its gradient times w_i n / W_B */
            REAL f = (REAL)(w[rows[i]] * wscale);
            row *= w[rows[i]];
            for (j = 0; j < k; j++) g[j] *= f;
        }
        total += row;
    }
    return total;
}

/* db[j] = sum over the m rows of G[:, j], for j in [k0, k1). */
static void R(colsum)(int m, int k, const REAL *restrict G, int k0, int k1,
                                  REAL *restrict db)
{
    for (int j = k0; j < k1; j++) db[j] = 0;
    for (int i = 0; i < m; i++) {
        const REAL *g = G + (long)i * k;
        for (int j = k0; j < k1; j++) db[j] += g[j];
    }
}

/* sum of x[i]^2 over count (at most a few thousand) entries, in GCC vector types (8 floats or 4
 * doubles, two SSE registers) so that it vectorises without -ffast-math; four partial sums, so
 * that the adds do not wait for each other (one chain is latency-bound: measured 7% of a
 * 64-32-10 step against 2% with four) */
typedef REAL R(vec) __attribute__((vector_size(32)));
#define FB_VL ((long)(32 / sizeof(REAL)))
FB_CLONES_T static double R(sum_squares)(long count, const REAL *x)
{
    const R(vec) zero = {0};
    R(vec) p0 = zero, p1 = zero, p2 = zero, p3 = zero, e0, e1, e2, e3;
    double sum = 0;
    long i = 0;
    for (; i + 4 * FB_VL <= count; i += 4 * FB_VL) {
        memcpy(&e0, x + i, sizeof e0);
        memcpy(&e1, x + i + FB_VL, sizeof e1);
        memcpy(&e2, x + i + 2 * FB_VL, sizeof e2);
        memcpy(&e3, x + i + 3 * FB_VL, sizeof e3);
        p0 += e0 * e0;
        p1 += e1 * e1;
        p2 += e2 * e2;
        p3 += e3 * e3;
    }
    for (; i + FB_VL <= count; i += FB_VL) {
        memcpy(&e0, x + i, sizeof e0);
        p0 += e0 * e0;
    }
    p0 += (p1 + p2) + p3;
    for (int q = 0; q < FB_VL; q++) sum += p0[q];
    for (; i < count; i++) sum += (double)x[i] * x[i];
    return sum;
}
#undef FB_VL

/* The optimizer update of entries [off, off + count) of parameter q (p and its gradient g from
 * there), by _c_step's loops (N->step_span; k: the step's constants, fb_step_consts); *gsum +=
 * ||g||^2 (the gradient before the decay term) and *psum += ||p_new||^2, each only when asked for
 * (non-NULL: the gradient norm is recorded for weights only, the penalty needs ||p||^2 only under
 * a decay).  Block by block, so that the sums read g and p from L1 (one pass over memory, as a
 * fused loop; a fused loop's sums would not vectorise). */
static void R(update)(fb_net *N, int q, long off, long count, REAL *p, const REAL *g,
                      const double *k, double *gsum, double *psum)
{
    void *s[FB_STEP_MAXS];
    for (long i = 0; i < count; i += 1024) {
        long c = count - i < 1024 ? count - i : 1024;
        for (int j = 0; j < FB_STEP_MAXS; j++)
            s[j] = N->state[q][j] ? FB_P(N->state[q][j]) + off + i : NULL;
        if (gsum) *gsum += R(sum_squares)(c, g + i);
        N->step_span(N->opt, FB_FLOAT, c, p + i, g + i, s, k);
        if (psum) *psum += R(sum_squares)(c, p + i);
    }
}

/* The step's constants for parameter q at update t (its weight decay in the hyperparameters,
 * times wscale = n_B / W_B in a weighted minibatch: the L2 term is over the batch's weight). */
static void R(step_consts)(fb_net *N, int q, long t, double wscale, double *k)
{
    double h[FB_STEP_MAXH];
    for (int j = 0; j < FB_STEP_MAXH; j++) h[j] = N->hyper[j];
    h[N->wd_index] = N->wd[q] * wscale;
    fb_step_consts(N->opt, h, t, k);
}

/* ------------------------------------------------------------------------------ one epoch */
static inline int R(split)(int total, int part, int parts)
{
    return (int)(((long)total * part) / parts);
}

/* The input of layer l over all rows of the minibatch. */
static inline const REAL *R(layer_input)(fb_net *N, int l, const REAL *Xin)
{
    if (N->drop[l]) return FB_P(N->D[l]);
    return l == 0 ? Xin : FB_P(N->A[l - 1]);
}

/* The dropout draws of layer l's input in minibatch j (nb rows) of this call. */
static inline const REAL *R(draws)(fb_net *N, int l, long j, int nb)
{
    int g = N->dgroup[l];
    return FB_P(N->U[g]) + (j - N->mb0) * (long)N->B * N->gwidth[g] + (long)nb * N->doff[l];
}

/* The penalty on the code h (m rows of k from this thread's rows; the sparse autoencoder's,
 * fastbp.models._generative.SparsityPenalty, whose formulas these are): returns its part of the
 * minibatch's summed objective (row i weighted by w_i as the loss: the mean times W_B).  L1:
 * weight sum_i w_i ||h_i||_1.  KL: each thread sums its rows' h (times w_i n_B / W_B), a barrier,
 * then every thread takes rho_hat = the sums over the threads / n_B, clipped to [eps, 1 - eps],
 * into its own copy, and thread 0 returns weight sum_j KL(rho || rho_hat_j) W_B. */
FB_COLD static double R(sparsity_forward)(fb_net *N, int tid, int m, int k, const REAL *A,
                                          const intptr_t *rows, double wscale, int all,
                                          double weight)
{
    double value = 0, rho = N->sp_rho, eps = FB_FLOAT ? FLT_EPSILON : DBL_EPSILON;
    double *part = N->rho_parts + (long)tid * k, *rh = N->rho_hat + (long)tid * k;
    if (N->sparsity == FB_SPARSE_L1) {
        for (int i = 0; i < m; i++) {
            double s = 0;
            for (int j = 0; j < k; j++) s += fabs((double)A[(long)i * k + j]);
            value += s * (N->sw ? N->sw[rows[i]] : 1.0);
        }
        return N->sp_weight * value;
    }
    for (int j = 0; j < k; j++) part[j] = 0;
    for (int i = 0; i < m; i++) {
        double f = N->sw ? N->sw[rows[i]] * wscale : 1.0;
        for (int j = 0; j < k; j++) part[j] += f * A[(long)i * k + j];
    }
    if (N->T > 1) fb_barrier(N->pool);
    for (int j = 0; j < k; j++) {
        double s = 0;
        for (int t = 0; t < N->T; t++) s += N->rho_parts[(long)t * k + j];
        s /= all;
        rh[j] = s < eps ? eps : (s > 1 - eps ? 1 - eps : s);
        if (tid == 0)
            value += (rho > 0 ? rho * log(rho / rh[j]) : 0)
                     + (rho < 1 ? (1 - rho) * log((1 - rho) / (1 - rh[j])) : 0);
    }
    return N->sp_weight * value * weight;
}

/* The penalty's gradient added to G = dL/dh (m rows of k): weight w_i n_B / W_B / n_B times
 * sign(h) (L1) or (1 - rho) / (1 - rho_hat_j) - rho / rho_hat_j (KL). */
FB_COLD static void R(sparsity_backward)(fb_net *N, int tid, int m, int k, const REAL *A, REAL *G,
                                         const intptr_t *rows, double wscale, int all)
{
    const double *rh = N->rho_hat + (long)tid * k;
    double rho = N->sp_rho;
    for (int i = 0; i < m; i++) {
        double f = N->sp_weight / all * (N->sw ? N->sw[rows[i]] * wscale : 1.0);
        for (int j = 0; j < k; j++) {
            REAL a = A[(long)i * k + j];
            double d = N->sparsity == FB_SPARSE_L1 ? (double)((a > 0) - (a < 0))
                                                   : (1 - rho) / (1 - rh[j]) - rho / rh[j];
            G[(long)i * k + j] += (REAL)(f * d);
        }
    }
}

/* Phase 1 on rows [r0, r1) of minibatch j: forward, loss, backward dX through every layer. */
/* (all: the rows of the minibatch over every rank, which scale the loss gradient; nb: its rows
 * here, whose dropout draws lie in the call's block; r0, r1 index both.)  A stack inside a larger
 * network's step (N->segment) runs the forward pass only (1), or the backward pass only (2) from
 * dL/d(output) in N->Y, down to dL/dX in N->Pout when that is set. */
static double R(phase1)(fb_net *N, int tid, long j, int all, int nb, int r0, int r1,
                        const intptr_t *rows, const REAL *Xin, double wscale, double weight)
{
    int m = r1 - r0, L = N->L;
    double value = 0;
    if (m <= 0 && N->sparsity != FB_SPARSE_KL) return 0; /* KL: every thread meets the barrier */
    const REAL *in = Xin + (long)r0 * N->d[0];
    if (N->segment >= 2) in = FB_P(N->A[L - 1]) + (long)r0 * N->d[L]; /* a backward pass */
    else for (int l = 0; l < L; l++) {
        int di = N->d[l], k = N->d[l + 1];
        if (N->drop[l]) {
            REAL *out = FB_P(N->D[l]) + (long)r0 * di;
            R(dropout_forward)((long)m * di, in, R(draws)(N, l, j, nb) + (long)r0 * di,
                               (REAL)N->rate[l], (REAL)N->dscale[l], out);
            in = out;
        }
        REAL *Z = FB_P(N->Z[l]) + (long)r0 * k, *A = FB_P(N->A[l]) + (long)r0 * k;
        R(fill_rows)(m, k, Z, FB_P(N->b[l]));
        R(gemm)(N, 'N', 'N', m, k, di, in, di, FB_P(N->W[l]), k, Z, k);
        R(act_forward)(N->act[l], (REAL)N->alpha[l], m, k, Z, A);
        if (l == N->code && N->sparsity)
            value += R(sparsity_forward)(N, tid, m, k, A, rows + r0, wscale, all, weight);
        in = A;
    }
    if (N->segment == 1) return 0;
    int k = N->d[L];
    REAL *G = FB_P(N->dZ[L - 1]) + (long)r0 * k, *dX0 = FB_P(N->Pout);
    if (N->segment)
        memcpy(G, (const REAL *)N->Y + (long)r0 * k, sizeof(REAL) * m * k);
    else
        value += R(loss_rows)(N->loss, m, k, in, (const REAL *)N->Y, N->labels ? N->lab : NULL,
                              rows + r0, all, G, N->sw, wscale);
    if (N->act[L - 1] != FB_IDENTITY)
        R(act_backward)(N->act[L - 1], (REAL)N->alpha[L - 1], m, k,
                        FB_P(N->Z[L - 1]) + (long)r0 * k, in, G, NULL, 0, 1);
    for (int l = L - 1; l >= (dX0 && N->segment ? 0 : 1); l--) {
        int di = N->d[l];
        k = N->d[l + 1];
        REAL *dX = (l ? FB_P(N->dZ[l - 1]) : dX0) + (long)r0 * di;
        R(fill_rows)(m, di, dX, NULL);
        R(gemm)(N, 'N', 'T', m, di, k, FB_P(N->dZ[l]) + (long)r0 * k, k, FB_P(N->W[l]), k, dX, di);
        if (l - 1 == N->code && N->sparsity)
            R(sparsity_backward)(N, tid, m, di, FB_P(N->A[l - 1]) + (long)r0 * di, dX, rows + r0,
                                 wscale, all);
        const REAL *u = N->drop[l] ? R(draws)(N, l, j, nb) + (long)r0 * di : NULL;
        if (l == 0) {
            if (u) R(dropout_mask)((long)m * di, dX, u, (REAL)N->rate[0], (REAL)N->dscale[0]);
        } else if (u || N->act[l - 1] != FB_IDENTITY)
            R(act_backward)(N->act[l - 1], (REAL)N->alpha[l - 1], m, di,
                            FB_P(N->Z[l - 1]) + (long)r0 * di, FB_P(N->A[l - 1]) + (long)r0 * di, dX,
                            u, (REAL)N->rate[l], (REAL)N->dscale[l]);
    }
    return value;
}

/* Phase 2 for thread tid: its rows of every dW, its entries of every db, and their updates, from
 * the m rows [lo, lo + m) of the minibatch that this rank computes (all of them in one process).
 * pass 3: both (one process); 1: the gradients only, into the flat send buffer; 2: the updates
 * only, from the flat buffer reduced over the ranks (data-parallel: see train_worker). */
/* dW goes to a per-thread scratch reused by every layer (it stays in cache: writing every layer's
 * full dW array, then reading it back for the update, costs DRAM traffic on the scale of the
 * products themselves), except in the last minibatch of the epoch, whose gradients stay in the
 * layers' dW arrays as after the layer-by-layer path. */
static void R(phase2)(fb_net *N, int tid, long step, int lo, int m, const REAL *Xin, int last,
                      double wscale, int pass)
{
    REAL *scratch = N->dWs && tid < N->dWs_threads && !last ? FB_P(N->dWs) + tid * N->dWs_size : NULL;
    REAL *flat = N->allreduce ? FB_P(pass == 1 ? N->gsend : N->grecv) : NULL;
    double k[FB_STEP_MAXK], pen = 0;
    for (int l = 0; l < N->L; l++) {
        int di = N->d[l], kw = N->d[l + 1];
        int p0 = N->p_lo[l][tid], p1 = N->p_lo[l][tid + 1];
        int k0 = N->k_lo[l][tid], k1 = N->k_lo[l][tid + 1];
        double sums[2] = {0, 0}, wd;
        const REAL *dZ = FB_P(N->dZ[l]) + (long)lo * kw;
        if (p1 > p0) {
            long off = (long)p0 * kw, count = (long)(p1 - p0) * kw;
            REAL *dW = flat ? flat + N->goff[2 * l] + off
                       : scratch && count <= N->dWs_size ? scratch : FB_P(N->dW[l]) + off;
            if (pass & 1) {
                const REAL *in = R(layer_input)(N, l, Xin) + (long)lo * di;
                R(fill_rows)(p1 - p0, kw, dW, NULL);
                R(gemm)(N, 'T', 'N', p1 - p0, kw, m, in + p0, di, dZ, kw, dW, kw);
            }
            if (pass & 2) {
                wd = N->wd[2 * l];
                R(step_consts)(N, 2 * l, step, wscale, k);
                R(update)(N, 2 * l, off, count, FB_P(N->W[l]) + off, dW, k, &sums[0],
                          wd != 0 ? &sums[1] : NULL);
                pen += 0.5 * wd * sums[1];
                if (flat && last) memcpy(FB_P(N->dW[l]) + off, dW, sizeof(REAL) * count);
            }
        }
        if (k1 > k0) {
            double bs = 0;
            REAL *db = flat ? flat + N->goff[2 * l + 1] : FB_P(N->db[l]);
            if (pass & 1) R(colsum)(m, kw, dZ, k0, k1, db);
            if (pass & 2) {
                wd = N->wd[2 * l + 1];
                R(step_consts)(N, 2 * l + 1, step, wscale, k);
                R(update)(N, 2 * l + 1, k0, k1 - k0, FB_P(N->b[l]) + k0, db + k0, k, NULL,
                          wd != 0 ? &bs : NULL);
                pen += 0.5 * wd * bs;
                if (flat && last) memcpy(FB_P(N->db[l]) + k0, db + k0, sizeof(REAL) * (k1 - k0));
            }
        }
        if (pass & 2) N->gn_part[tid][l] = sums[0];
    }
    if (pass & 2) N->pen_part[tid] = pen;
}

/* One thread's part of minibatches [mb0, mb1).  Data-parallel (N->allreduce), this rank computes
 * the gradients of its rows only -- its contiguous share [lo, hi) of each minibatch when every
 * rank holds the same rows (the split of fastbp.distributed.share), or all the rows of its own
 * minibatch when the rows are sharded -- scaled by the rows of the whole minibatch over all ranks
 * (nb, or dp_rows), so that the sum over the ranks is the minibatch mean exactly, an uneven or
 * empty share included; then thread 0 sums the flat gradients over the ranks (one MPI_Allreduce
 * per step, between two barriers) and every rank takes the same step from the same sum. */
static void R(train_worker)(void *arg, int tid)
{
    fb_net *N = (fb_net *)arg;
    int T = N->T, d0 = N->d[0];
    const REAL *X = (const REAL *)N->X;
    REAL *Xb = FB_P(N->Xb);
    double value = 0;
    for (long j = N->mb0; j < N->mb1; j++) {
        long start = j * N->B;
        int nb = (int)(N->n - start < N->B ? N->n - start : N->B);
        nb = nb < 0 ? 0 : nb; /* sharded: a rank whose rows have run out takes part with none */
        const intptr_t *rows = N->order + start;
        int lo = (int)(((long)nb * N->dp_rank) / N->dp_size);
        int hi = (int)(((long)nb * (N->dp_rank + 1)) / N->dp_size);
        int all = N->dp_rows ? (int)N->dp_rows[j - N->mb0] : nb; /* the minibatch's rows */
        int r0 = lo + R(split)(hi - lo, tid, T), r1 = lo + R(split)(hi - lo, tid + 1, T);
        int contiguous = hi > lo && rows[lo] >= lo;
        for (int i = lo + 1; i < hi && contiguous; i++) contiguous = rows[i] == rows[lo] + i - lo;
        const REAL *Xin = Xb;
        if (contiguous) {
            Xin = X + (long)(rows[lo] - lo) * d0;
        } else {
            for (int i = r0; i < r1; i++)
                memcpy(Xb + (long)i * d0, X + (long)rows[i] * d0, sizeof(REAL) * d0);
        }
        double weight = all, wscale = 1; /* W_B, and n_B / W_B (sample weights: > 0 each) */
        if (N->sw) {
            weight = 0;
            for (int i = 0; i < nb; i++) weight += N->sw[rows[i]];
            wscale = nb / weight;
        }
        FB_PROFILE_MARK(0);
        value += R(phase1)(N, tid, j, all, nb, r0, r1, rows, Xin, wscale, weight);
        FB_PROFILE_MARK(1);
        if (T > 1) fb_barrier(N->pool);
        FB_PROFILE_MARK(2);
        long step = N->t + (j - N->mb0) + 1;
        int last = start + nb >= N->n;
        R(phase2)(N, tid, step, lo, hi - lo, Xin, last, wscale, N->allreduce ? 1 : 3);
        if (N->allreduce) {
            if (T > 1) fb_barrier(N->pool);
            if (tid == 0 && !N->reduce_error) N->reduce_error = fb_allreduce(N);
            if (T > 1) fb_barrier(N->pool);
            if (N->reduce_error) break; /* every thread sees it after the barrier */
            R(phase2)(N, tid, step, lo, hi - lo, Xin, last, wscale, 2);
        }
        FB_PROFILE_MARK(3);
        if (T > 1) fb_barrier(N->pool);
        FB_PROFILE_MARK(4);
        if (tid == 0) fb_combine(N, all, weight);
    }
    N->loss_part[tid] = value;
}

/* Train minibatches [mb0, mb1) of the epoch; the caller sets X, Y/lab, order, n, U, t, T. */
/* A stack's pass inside a larger network's step (N->segment, fb_call's field): the n rows of X
 * split over the threads; the backward pass then takes the gradients of every dW and db into
 * the layers' own (2), or takes the optimizer's step from them, as a training step does (3). */
FB_COLD static void R(segment_worker)(void *arg, int tid)
{
    fb_net *N = (fb_net *)arg;
    int n = (int)N->n;
    R(phase1)(N, tid, N->mb0, n, n, R(split)(n, tid, N->T), R(split)(n, tid + 1, N->T), NULL,
              (const REAL *)N->X, 1, n);
    if (N->segment == 2 || N->segment == 3) {
        if (N->T > 1) fb_barrier(N->pool);
        R(phase2)(N, tid, N->t + 1, 0, n, (const REAL *)N->X, N->segment == 2, 1,
                  N->segment == 2 ? 1 : 3);
        if (N->segment == 3) {
            if (N->T > 1) fb_barrier(N->pool);
            if (tid == 0) fb_combine(N, n, n);
        }
    }
}

static void R(train)(fb_net *N)
{
    if (N->T > 1) {
        int available = fb_pool_start(N->pool);
        N->T = N->T < available ? N->T : available;
    }
    fb_partition(N);
    fb_pool_run(N->pool, N->T, N->segment ? R(segment_worker) : R(train_worker), N);
    N->loss_sum = 0;
    for (int t = 0; t < N->T; t++) N->loss_sum += N->loss_part[t];
}

/* ------------------------------------------------------------------------------ prediction */
static void R(predict_worker)(void *arg, int tid)
{
    fb_net *N = (fb_net *)arg;
    long lo = (N->Pn * tid) / N->PT, hi = (N->Pn * (tid + 1)) / N->PT;
    int L = N->L;
    long block = (long)N->Pchunk * N->Pwidth;
    REAL *buf = FB_P(N->Pbuf) + (long)tid * 2 * block;
    for (long r = lo; r < hi; r += N->Pchunk) {
        int m = (int)(hi - r < N->Pchunk ? hi - r : N->Pchunk);
        const REAL *in = (const REAL *)N->PX + r * N->d[0];
        for (int l = 0; l < L; l++) {
            int di = N->d[l], k = N->d[l + 1];
            REAL *out = l == L - 1 ? FB_P(N->Pout) + r * k : buf + (l & 1) * block;
            R(fill_rows)(m, k, out, FB_P(N->b[l]));
            R(gemm)(N, 'N', 'N', m, k, di, in, di, FB_P(N->W[l]), k, out, k);
            R(act_forward)(N->act[l], (REAL)N->alpha[l], m, k, out, out);
            in = out;
        }
    }
}

static void R(predict)(fb_net *N)
{
    if (N->PT > 1) {
        int available = fb_pool_start(N->pool);
        N->PT = N->PT < available ? N->PT : available;
    }
    fb_pool_run(N->pool, N->PT, R(predict_worker), N);
}

#endif /* FB_TRAIN_ENGINE_BODY */
