/* A TFLite external delegate that runs nothing: its Prepare claims no nodes, so the whole graph
 * stays on the CPU. The tests build it with `cc -shared` to prove the real external-delegate
 * loading path (dlopen, tflite_plugin_create_delegate with options, Prepare, destroy) without an
 * accelerator.
 *
 * Options:
 *   log=PATH   append what happens (each option, prepare, destroy) to PATH, one event a line
 *   fail=TEXT  refuse to create the delegate, reporting TEXT through report_error
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tflite_delegate_abi.h"

typedef struct {
  char log_path[4096];
} NoopState;

static void note(const NoopState* s, const char* what, const char* a, const char* b) {
  if (!s->log_path[0]) return;
  FILE* f = fopen(s->log_path, "a");
  if (!f) return;
  fprintf(f, "%s%s%s%s%s\n", what, a ? " " : "", a ? a : "", b ? "=" : "", b ? b : "");
  fclose(f);
}

static TfLiteStatus noop_prepare(TfLiteContext* context, TfLiteDelegate* delegate) {
  (void)context;
  note((const NoopState*)delegate->data_, "prepare", NULL, NULL);
  return kTfLiteOk;
}

TfLiteDelegate* tflite_plugin_create_delegate(char** keys, char** values, size_t num_options,
                                              TfLiteReportError report_error) {
  /* Python's load_delegate declares the count as a C int: read only its low 32 bits. */
  unsigned n = (unsigned)(num_options & 0xffffffffu);
  NoopState* state = calloc(1, sizeof *state);
  TfLiteDelegate* d = calloc(1, sizeof *d);
  if (!state || !d) {
    free(state);
    free(d);
    if (report_error) report_error("noop delegate: out of memory");
    return NULL;
  }
  for (unsigned i = 0; i < n; i++) {
    if (strcmp(keys[i], "log") == 0) {
      strncpy(state->log_path, values[i], sizeof state->log_path - 1);
    }
  }
  for (unsigned i = 0; i < n; i++) {
    note(state, "option", keys[i], values[i]);
    if (strcmp(keys[i], "fail") == 0) {
      if (report_error) report_error(values[i]);
      free(state);
      free(d);
      return NULL;
    }
  }
  note(state, "create", NULL, NULL);
  d->data_ = state;
  d->Prepare = noop_prepare;
  d->CopyFromBufferHandle = NULL;
  d->CopyToBufferHandle = NULL;
  d->FreeBufferHandle = NULL;
  d->flags = kTfLiteDelegateFlagsNone;
  d->opaque_delegate_builder = NULL;
  return d;
}

void tflite_plugin_destroy_delegate(TfLiteDelegate* delegate) {
  if (!delegate) return;
  NoopState* s = (NoopState*)delegate->data_;
  if (s) note(s, "destroy", NULL, NULL);
  free(s);
  free(delegate);
}
