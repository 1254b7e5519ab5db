"""dogbreed.train"""
