import FuzzSupport

FuzzSupport.main(FuzzSupport.runVolumeID)
