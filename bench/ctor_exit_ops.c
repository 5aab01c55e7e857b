/* oxit: the exit-side relay-cell crypto that C tor's `bench cell_ops_tor1`
 * leaves out or mixes in, measured with tor's own functions so the figures
 * are C tor's (perf-anchors.md section 1.5, "local variant of bench.c").
 *
 * Built by bench/ctor_cell_ops.sh against the headers and static libraries
 * of a C tor build (it is our code; nothing from tor is copied here). Same
 * method as bench.c: CLOCK_PROCESS_CPUTIME_ID, in-place 509-byte payloads,
 * ns per cell.
 *
 * Cases:
 *  - exit recognized: tor1_crypt_relay_forward() on cells a client layer
 *    addressed to this hop (AES-CTR + recognized check + checkpoint +
 *    SHA-1 update(509) + get_digest), prepared untimed in chunks;
 *  - exit originate: tor1_crypt_relay_originate() (SHA-1 update(509) +
 *    get_digest + AES-CTR), the tor1 arm of relay_encrypt_cell_inbound;
 *  - the two primitives alone: crypto_digest_add_bytes(509) and
 *    crypto_cipher_crypt_inplace(509).
 */
#include "orconfig.h"
#include "core/or/or.h"
#include "core/or/cell_st.h"
#include "core/crypto/relay_crypto_tor1.h"
#include "core/crypto/tor1_crypt_st.h"
#include "lib/crypt_ops/crypto_cipher.h"
#include "lib/crypt_ops/crypto_digest.h"
#include "lib/crypt_ops/crypto_init.h"
#include "lib/crypt_ops/crypto_rand.h"
#include "app/main/subsysmgr.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Same count as bench.c's bench_cell_ops_tor1 in 0.4.9. */
#define ITERS (1 << 20)
/* Prepared recognized cells per chunk (32 MiB of cells). */
#define CHUNK (1 << 16)

static uint64_t
cpu_ns(void)
{
  struct timespec ts;
  if (clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts) != 0) {
    perror("clock_gettime");
    exit(1);
  }
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void
show(const char *what, uint64_t ns, uint64_t n)
{
  printf("%s: %.2f ns per cell. (%.3f ns per byte of payload)\n", what,
         (double)ns / (double)n, (double)ns / ((double)n * CELL_PAYLOAD_SIZE));
}

/* Client and relay from the same 72 bytes, not reversed: the client
 * originates forward with (Df, Kf) and the relay checks with (Df, Kf). */
static void
init_pair(tor1_crypt_t *client, tor1_crypt_t *relay)
{
  char keys[CPATH_KEY_MATERIAL_LEN];
  crypto_rand(keys, sizeof(keys));
  memset(client, 0, sizeof(*client));
  memset(relay, 0, sizeof(*relay));
  if (tor1_crypt_init(client, keys, sizeof(keys), 0, 0) < 0 ||
      tor1_crypt_init(relay, keys, sizeof(keys), 0, 0) < 0) {
    fprintf(stderr, "tor1_crypt_init failed\n");
    exit(1);
  }
}

static void
bench_exit_recognized(void)
{
  tor1_crypt_t client, relay;
  init_pair(&client, &relay);
  cell_t *cells = tor_malloc(sizeof(cell_t) * CHUNK);
  uint64_t total = 0, done = 0, recognized = 0;
  while (done < ITERS) {
    for (int i = 0; i < CHUNK; ++i) {
      crypto_rand((char *)cells[i].payload, CELL_PAYLOAD_SIZE);
      /* relay_header_pack() leaves Recognized and Digest zero before
       * the digest is set (relay_send_command_from_edge_). */
      memset(cells[i].payload + 1, 0, 2);
      memset(cells[i].payload + 5, 0, 4);
      tor1_crypt_client_originate(&client, &cells[i]);
    }
    uint64_t t = cpu_ns();
    for (int i = 0; i < CHUNK; ++i)
      recognized += tor1_crypt_relay_forward(&relay, &cells[i]);
    total += cpu_ns() - t;
    done += CHUNK;
  }
  if (recognized != done) {
    fprintf(stderr, "only %llu of %llu cells recognized\n",
            (unsigned long long)recognized, (unsigned long long)done);
    exit(1);
  }
  show("exit recognized (relay_forward)", total, done);
  tor_free(cells);
  tor1_crypt_clear(&client);
  tor1_crypt_clear(&relay);
}

static void
bench_exit_originate(void)
{
  tor1_crypt_t client, relay;
  init_pair(&client, &relay);
  cell_t *cell = tor_malloc(sizeof(cell_t));
  crypto_rand((char *)cell->payload, CELL_PAYLOAD_SIZE);
  uint64_t t = cpu_ns();
  for (int i = 0; i < ITERS; ++i)
    tor1_crypt_relay_originate(&relay, cell);
  show("exit originate (relay_originate)", cpu_ns() - t, ITERS);
  tor_free(cell);
  tor1_crypt_clear(&client);
  tor1_crypt_clear(&relay);
}

static void
bench_primitives(void)
{
  char payload[CELL_PAYLOAD_SIZE];
  char key[CIPHER_KEY_LEN];
  crypto_rand(payload, sizeof(payload));
  crypto_rand(key, sizeof(key));

  crypto_digest_t *d = crypto_digest_new();
  uint64_t t = cpu_ns();
  for (int i = 0; i < ITERS; ++i)
    crypto_digest_add_bytes(d, payload, sizeof(payload));
  show("SHA-1 add_bytes(509) alone", cpu_ns() - t, ITERS);

  char out[DIGEST_LEN];
  t = cpu_ns();
  for (int i = 0; i < ITERS; ++i) {
    crypto_digest_add_bytes(d, payload, sizeof(payload));
    crypto_digest_get_digest(d, out, DIGEST_LEN);
  }
  show("SHA-1 add_bytes(509) + get_digest", cpu_ns() - t, ITERS);
  crypto_digest_free(d);

  crypto_cipher_t *c = crypto_cipher_new(key);
  t = cpu_ns();
  for (int i = 0; i < ITERS; ++i)
    crypto_cipher_crypt_inplace(c, payload, sizeof(payload));
  show("AES-CTR crypt_inplace(509) alone", cpu_ns() - t, ITERS);
  crypto_cipher_free(c);
}

int
main(void)
{
  subsystems_init_upto(SUBSYS_LEVEL_LIBS);
  if (crypto_global_init(0, NULL, NULL) < 0) {
    fprintf(stderr, "crypto_global_init failed\n");
    return 1;
  }
  bench_exit_recognized();
  bench_exit_originate();
  bench_primitives();
  return 0;
}
