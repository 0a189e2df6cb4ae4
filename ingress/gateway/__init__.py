"""ingress/gateway"""
