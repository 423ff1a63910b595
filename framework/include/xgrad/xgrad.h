// xgrad/xgrad.h — the one header users include: tensors, autograd, ops, layers, optimizers.
#pragma once

#include "xgrad/anomaly.h"
#include "xgrad/autograd.h"
#include "xgrad/blas.h"
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
#if __has_include("xgrad/parallel.h")
#include "xgrad/parallel.h"
#endif
#if __has_include("xgrad/nn.h")
#include "xgrad/nn.h"
#endif
#if __has_include("xgrad/optim.h")
#include "xgrad/optim.h"
#endif
