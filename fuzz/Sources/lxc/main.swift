import FuzzSupport

FuzzSupport.main(.lxc)
