// xgrad/nn.h — everything in namespace xg::nn: the Module system, layers, losses, BatchNorm, init and the
// functional forms. Included by xgrad/xgrad.h.
#pragma once

#include "xgrad/nn/activation.h"
#include "xgrad/nn/batchnorm.h"
#include "xgrad/nn/conv.h"
#include "xgrad/nn/dropout.h"
#include "xgrad/nn/functional.h"
#include "xgrad/nn/init.h"
#include "xgrad/nn/linear.h"
#include "xgrad/nn/loss.h"
#include "xgrad/nn/lpnorm.h"
#include "xgrad/nn/module.h"
#include "xgrad/nn/normalization.h"
#include "xgrad/nn/options.h"
#include "xgrad/nn/pooling.h"
#include "xgrad/nn/sequential.h"
