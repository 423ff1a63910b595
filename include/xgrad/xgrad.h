// xgrad/xgrad.h — the one header users include: tensors, autograd, ops, layers, optimizers. It belongs to the
// top-level target xgrad::xgrad, which links all three libraries (framework, layers, optim); each library's own
// headers include only the headers of the libraries below it (docs/architecture.md).
#pragma once

#include "xgrad/anomaly.h"
#include "xgrad/atomic_file.h"
#include "xgrad/autograd.h"
#include "xgrad/blas.h"
#include "xgrad/checkpoint.h"
#include "xgrad/common.h"
#include "xgrad/cpu.h"
#include "xgrad/data.h"
#include "xgrad/gradcheck.h"
#include "xgrad/graph.h"
#include "xgrad/memory.h"
#include "xgrad/ops.h"
#include "xgrad/random.h"
#include "xgrad/serialize.h"
#include "xgrad/tensor.h"
#include "xgrad/trace.h"
#include "xgrad/parallel.h"

#include "xgrad/nn.h"     // layers/
#include "xgrad/optim.h"  // optim/
