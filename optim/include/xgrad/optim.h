// xgrad/optim.h — everything in xg::optim: the Optimizer base with parameter groups and checkpoints, SGD, Adam,
// AdamW, RMSprop, Adagrad (PyTorch 1.13 update rules), learning-rate schedules, gradient clipping and the
// NaN/Inf gradient check. docs/optim.md has every update rule as a formula and a full training loop.
#pragma once

#include "xgrad/optim/adagrad.h"
#include "xgrad/optim/adam.h"
#include "xgrad/optim/clip_grad.h"
#include "xgrad/optim/lr_scheduler.h"
#include "xgrad/optim/optimizer.h"
#include "xgrad/optim/rmsprop.h"
#include "xgrad/optim/sgd.h"
