// placeholder until the first layer lands
