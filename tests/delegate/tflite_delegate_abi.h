/* The parts of the TensorFlow Lite C API an external delegate library needs, written from the
 * public, documented struct (tensorflow/lite/core/c/common.h, TfLiteDelegate) and the external
 * delegate plugin ABI (tflite_plugin_create_delegate / tflite_plugin_destroy_delegate) that
 * `load_delegate` in the Python runtime calls. Only pointers to the runtime's own structs are
 * passed around, so those stay opaque here. */
#ifndef EDGEDETECT_TFLITE_DELEGATE_ABI_H
#define EDGEDETECT_TFLITE_DELEGATE_ABI_H

#include <stddef.h>
#include <stdint.h>

typedef enum { kTfLiteOk = 0, kTfLiteError = 1 } TfLiteStatus;
typedef int TfLiteBufferHandle;
typedef struct TfLiteContext TfLiteContext;  /* opaque */
typedef struct TfLiteTensor TfLiteTensor;    /* opaque */
typedef struct TfLiteOpaqueDelegateBuilder TfLiteOpaqueDelegateBuilder;  /* opaque */

enum { kTfLiteDelegateFlagsNone = 0 };

typedef struct TfLiteDelegate {
  void* data_;
  /* Called once while the interpreter is built: a delegate claims the nodes it runs by calling
   * context->ReplaceNodeSubsetsWithDelegateKernels; one that claims none leaves all to the CPU. */
  TfLiteStatus (*Prepare)(TfLiteContext* context, struct TfLiteDelegate* delegate);
  TfLiteStatus (*CopyFromBufferHandle)(TfLiteContext* context, struct TfLiteDelegate* delegate,
                                       TfLiteBufferHandle buffer_handle, TfLiteTensor* tensor);
  TfLiteStatus (*CopyToBufferHandle)(TfLiteContext* context, struct TfLiteDelegate* delegate,
                                     TfLiteBufferHandle buffer_handle, TfLiteTensor* tensor);
  void (*FreeBufferHandle)(TfLiteContext* context, struct TfLiteDelegate* delegate,
                           TfLiteBufferHandle* handle);
  int64_t flags;
  TfLiteOpaqueDelegateBuilder* opaque_delegate_builder;  /* NULL: a classic delegate */
} TfLiteDelegate;

/* The external delegate plugin ABI. */
typedef void (*TfLiteReportError)(const char* message);
TfLiteDelegate* tflite_plugin_create_delegate(char** options_keys, char** options_values,
                                              size_t num_options, TfLiteReportError report_error);
void tflite_plugin_destroy_delegate(TfLiteDelegate* delegate);

#endif
